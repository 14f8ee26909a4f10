"""The libkrun helper's own entry: ``python -m agentbox_krun.enter ENV_VAR LAUNCH_CONF``.

The direct-libkrun runtime starts the helper with this, straight from the interpreter: nothing of
a command line (its config, state paths, verbs) is loaded again on the way to libkrun. ``ENV_VAR``
names the variable the parent set to the library it found (see ``agentbox_krun.helper``).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

MODULE = "agentbox_krun.enter"


def argv(python: str, library_env: str, conf: Path) -> list[str]:
    """How a parent starts the helper (pure)."""
    return [python, "-m", MODULE, library_env, os.fspath(conf)]


if __name__ == "__main__":
    import sys

    from agentbox_krun.helper import main

    sys.exit(main())
