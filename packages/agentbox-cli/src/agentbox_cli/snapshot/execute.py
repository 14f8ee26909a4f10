"""Carrying out a ``SnapshotPlan``: each step through the storage primitives and the runner.
Directory items (an overlay upper holds files of subordinate ids) are copied and removed in
the user namespace ``prefix`` gives; files directly."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from agentbox_cli.snapshot.plan import Copy, Remove, Rename, SnapshotPlan, WriteManifest
from agentbox_state.runner import Runner
from agentbox_storage import snapshot


def execute(plan: SnapshotPlan, runner: Runner, *, prefix: Sequence[str] = (),
            say: Callable[[str], None] | None = None) -> None:  # fmt: skip
    for step in plan.steps:
        if say is not None:
            say(step.describe())
        if isinstance(step, Copy):
            step.dest.parent.mkdir(parents=True, exist_ok=True)
            pre = prefix if step.source.is_dir() else ()
            snapshot.copy_item(step.source, step.dest, runner, copy=step.full, prefix=pre)
        elif isinstance(step, WriteManifest):
            snapshot.write_manifest(step.snapshot, step.manifest)
        elif isinstance(step, Rename):
            os.replace(step.source, step.dest)
        elif isinstance(step, Remove):
            pre = prefix if step.path.is_dir() else ()
            snapshot.remove_item(step.path, runner, prefix=pre)
