"""The ``agentbox`` console script."""

from __future__ import annotations

from agentbox_cli.agents.verb import AGENTS
from agentbox_cli.container.verb import CONTAINER
from agentbox_cli.doctor.verb import DOCTOR
from agentbox_cli.imagebuild.verb import IMAGE
from agentbox_cli.internal import INTERNAL
from agentbox_cli.keep.verb import DISKS, FORGET, GC
from agentbox_cli.kube.verb import KUBE
from agentbox_cli.libkrun.verb import LIBKRUN
from agentbox_cli.microvm.verb import MICROVM
from agentbox_cli.schema import SPEC
from agentbox_cli.tasks.verb import KILL, PS, STOP
from agentbox_state.cli.console import console_main
from agentbox_state.cli.verbs import COMPLETION, CONFIG, PATHS
from loftd.snapshot.verb import snapshot_verb

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from loftd.snapshot.hooks import StateHooks


def _snapshot_hooks() -> StateHooks:
    from agentbox_cli.container.sidecar import snapshot_hooks

    return snapshot_hooks()


SNAPSHOT = snapshot_verb(_snapshot_hooks)

VERBS = (LIBKRUN, CONTAINER, MICROVM, PATHS, CONFIG, IMAGE, DOCTOR, DISKS, GC, FORGET, PS, STOP,
         KILL, AGENTS, SNAPSHOT, KUBE, COMPLETION, INTERNAL)  # fmt: skip


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    return console_main(SPEC, VERBS, argv, environ)
