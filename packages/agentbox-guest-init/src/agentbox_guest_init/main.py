"""Entry point of ``agentbox-guest-init``.

Standard library only, and nothing of agentbox's host packages: this runs inside the guest,
frozen. Parsing is a hand-written loop (argparse costs start-up time here).

Exit codes: 0 success; 2 usage error (unknown verb, bad arguments); other codes come from the
command this init finally runs.
"""

from __future__ import annotations

import sys

from agentbox_guest_init import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

PROG = "agentbox-guest-init"
USAGE = f"usage: {PROG} --version | --help"
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        print(f"{PROG} {__version__}")
        return 0
    if args in (["--help"], ["-h"]):
        print(USAGE)
        return 0
    what = " ".join(args) if args else "(nothing)"
    print(f"{PROG}: unknown command: {what}; {USAGE}", file=sys.stderr)
    return EXIT_USAGE
