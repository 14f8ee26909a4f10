"""An agent's first state, forked from the project's by copy-on-write copies
(``agentbox_storage.snapshot.copy_item``: a reflink copy, or a btrfs subvolume snapshot), so
it starts from the project's latest disks, ``/nix`` upper and cargo dir without copying them.

Where the project's state cannot share blocks, or is in use, the agent starts empty and says
why: a full copy is never made behind the user's back.
"""

from __future__ import annotations

import os
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from agentbox_state.runner import Runner

# what of a project's state outlives a run, besides its raw disks (``*.raw``): container mode's
# /nix overlay upper (written in the user namespace) and the cargo dir
PERSISTENT_DIRS = ("nix/upper", "cargo")
IN_USERNS = ("nix/upper",)


def persistent_items(state_dir: Path) -> list[str]:
    """The project's items to fork, relative to ``state_dir``: its disks, then its dirs."""
    try:
        names = sorted(os.listdir(state_dir))
    except OSError:
        return []
    disks = [n for n in names if n.endswith(".raw") and (state_dir / n).is_file()]
    return [*disks, *(d for d in PERSISTENT_DIRS if (state_dir / d).is_dir())]


def fork(project_state: Path, agent_state: Path, runner: Runner, *, userns: Sequence[str],
         busy: Sequence[str], say: Callable[[str], None]) -> list[str]:  # fmt: skip
    """Fork ``project_state``'s persistent items into the new ``agent_state`` (which must not
    exist yet); ``busy``: why the project's state is in use now (then nothing is forked).
    Returns the items forked, each ``REL (how)``."""
    from agentbox_storage.snapshot import can_reflink, copy_item

    items = persistent_items(project_state)
    if not items or agent_state.exists():
        return []
    if busy:
        say(f"agentbox: the agent's state starts empty: the project's is in use ({busy[0]})")
        return []
    if not can_reflink(project_state, runner):
        say(f"agentbox: the agent's state starts empty: {project_state} cannot share blocks "
            "(reflink), and a full copy is not made")  # fmt: skip
        return []
    agent_state.mkdir(parents=True)
    done = []
    for rel in items:
        dest = agent_state / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        prefix = userns if rel in IN_USERNS else ()
        done.append(f"{rel} ({copy_item(project_state / rel, dest, runner, prefix=prefix)})")
    return done
