"""Console-script plumbing every command line shares (``agentbox``, ``loftd``): owns stdout,
stderr and exit."""

from __future__ import annotations

import os
import sys

from agentbox_state.cli import app

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


def _out(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # The reader is gone: point stdout at /dev/null so the interpreter's own flush at exit
        # does not fail again, then let the error end the command (exit 141, no message).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def console_main(
    spec: app.AppSpec,
    verbs: Sequence[app.Verb],
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None,
) -> int:
    """Run one invocation against the real process's argv, environment and streams."""
    return app.main(
        spec,
        verbs,
        sys.argv[1:] if argv is None else argv,
        os.environ if environ is None else environ,
        out=_out,
        err=_err,
    )
