"""The ``loftd`` console script."""

from __future__ import annotations

from agentbox_state.cli.console import console_main
from agentbox_state.cli.verbs import COMPLETION, CONFIG, PATHS
from loftd.launch import INTERNAL, LAUNCH
from loftd.schema import SPEC
from loftd.snapshot.verb import snapshot_verb

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from loftd.snapshot.hooks import StateHooks


def _snapshot_hooks() -> StateHooks:
    """loftd's runs hold the lease of their /nix overlay (the helper, while the VM runs)."""
    from agentbox_state.lock import FileLock
    from loftd.face import FACE
    from loftd.snapshot.hooks import StateHooks

    def locks(state_dir: Path) -> list[FileLock]:
        overlay = state_dir / (FACE.nix_overlay_dir or "")
        if FACE.nix_overlay_dir is None or not overlay.is_dir():
            return []
        return [FileLock(overlay / "lease", what=f"loftd's /nix overlay {overlay}")]

    return StateHooks(locks=locks)


VERBS = (LAUNCH, PATHS, CONFIG, snapshot_verb(_snapshot_hooks), COMPLETION, INTERNAL)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    return console_main(SPEC, VERBS, argv, environ)
