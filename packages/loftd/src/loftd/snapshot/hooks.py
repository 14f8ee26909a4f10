"""What an app tells the snapshot verb of its runs (no start-up path imports this)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentbox_state.lock import FileLock


def _none(_state_dir: Path) -> dict[str, str]:
    return {}


@dataclass(frozen=True, slots=True)
class StateHooks:
    # the locks a run of the app takes in ``state_dir`` (besides each disk's lease), taken
    # exclusively while snapshots change it
    locks: Callable[[Path], list[FileLock]]
    # what the app's last run recorded: ``image_id`` (the image it ran, for the manifest) and
    # ``mounted`` (non-empty while an overlay of its is kept mounted over ``nix/merged``)
    recorded: Callable[[Path], dict[str, str]] = field(default=_none)
    stop: str = ""  # the app's command that stops a running task, for the hints ("" if none)
