"""How a command line turns an exception into its stderr text and exit status."""

from __future__ import annotations

from agentbox_state.errors import AgentboxError, render_error


def failure(prog: str, err: BaseException, *, debug: bool) -> tuple[int, str]:
    """(exit status, text for stderr) for an exception that ended a command line.

    ``AgentboxError`` gives its message, hint and code; Ctrl-C gives 130; a closed output pipe
    gives 141 (128 + SIGPIPE) silently, as for other tools; anything else is a bug and says so.
    The traceback is included only with ``debug``.
    """
    if isinstance(err, KeyboardInterrupt):
        return 130, f"{prog}: interrupted"
    if isinstance(err, BrokenPipeError):
        return 141, ""  # the reader went away (`agentbox paths | head -1`): nothing to say
    text = render_error(prog, err)
    if debug:
        import traceback

        text = "".join(traceback.format_exception(err)) + text
    code = err.exit_code if isinstance(err, AgentboxError) else 1
    return code, text


def wants_debug(argv: list[str]) -> bool:
    """Whether ``--debug`` is among the options (before any ``--``), even if parsing fails."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--debug":
            return True
    return False
