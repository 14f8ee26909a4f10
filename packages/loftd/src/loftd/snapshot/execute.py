"""Carrying out a ``SnapshotPlan``: each step through the storage primitives and the runner.
Directory items (an overlay upper holds files of subordinate ids) are copied and removed in
the user namespace ``prefix`` gives; files directly.

``holding`` keeps runs out while the state is copied or replaced, by the locks the runs take:
each disk's lease (a VM run holds it), and those the app's hooks name (agentbox's container
mode: ``sidecar.lock`` and ``sidecar-users.lock``; loftd: its /nix overlay's lease). A lock
held meanwhile refuses, changing nothing."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from agentbox_state.errors import AgentboxError
from agentbox_state.lock import FileLock
from agentbox_state.runner import Runner
from agentbox_storage import disks, snapshot
from loftd.snapshot.hooks import StateHooks
from loftd.snapshot.plan import Copy, Remove, Rename, SnapshotPlan, WriteManifest


def _locks(state_dir: Path, hooks: StateHooks) -> list[FileLock]:
    found = [
        disks.lease(state_dir / n) for n in sorted(os.listdir(state_dir)) if n.endswith(".raw")
    ]
    return found + hooks.locks(state_dir)


@contextmanager
def holding(state_dir: Path, hooks: StateHooks) -> Iterator[None]:
    """Hold every lock a run of the project takes, exclusively, for the duration."""
    from loftd.snapshot.plan import SnapshotError, stop_it

    with ExitStack() as stack:
        for lock in _locks(state_dir, hooks):
            try:
                lock.acquire()
            except AgentboxError as err:
                raise SnapshotError(
                    f"refusing to change snapshots while the project's state is in use: "
                    f"{err.message}",
                    hint=f"wait for that task to end ({stop_it(hooks.stop)}) and retry; "
                    "nothing changed",
                ) from err
            stack.callback(lock.release)
        yield


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
