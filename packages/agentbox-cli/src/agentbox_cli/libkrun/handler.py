"""Is crun's krun handler available? Asked before anything is created."""

from __future__ import annotations

from agentbox_state.errors import AgentboxError, CommandError
from agentbox_state.runner import Runner

HINT = (
    "libkrun mode needs crun built with libkrun (its --version lists +LIBKRUN) and libkrunfw; "
    "`agentbox container` runs the same image in a rootless container without them"
)


class KrunUnavailableError(AgentboxError):
    pass


def check_krun_handler(runner: Runner) -> str:
    """crun's version line when it has the krun handler; ``KrunUnavailableError`` otherwise."""
    try:
        out = runner.run(["crun", "--version"]).stdout
    except CommandError as err:
        reason = "crun is not installed" if err.returncode is None else f"crun failed: {err}"
        raise KrunUnavailableError(
            f"libkrun mode is not available here: {reason}", hint=HINT
        ) from err
    first = out.splitlines()[0] if out else "crun"
    if "+LIBKRUN" not in out:
        raise KrunUnavailableError(
            f"libkrun mode is not available here: {first} is built without libkrun", hint=HINT
        )
    return first
