"""Is crun's krun handler available? Asked before anything is created."""

from __future__ import annotations

from agentbox_state.errors import AgentboxError, CommandError
from agentbox_state.runner import Runner

# Where every refusal of libkrun mode (the default) points: doctor, and the config line that
# makes another mode the default (never chosen silently).
DOCTOR_HINT = (
    "`agentbox doctor` says which mode this host can run; to make container mode the default, "
    'put `[run]` / `mode = "container"` in agentbox.toml (or set AGENTBOX_MODE=container)'
)
HINT = (
    "libkrun mode needs crun built with libkrun (its --version lists +LIBKRUN) and libkrunfw; "
    "`agentbox container` runs the same image in a rootless container without them; " + DOCTOR_HINT
)


UNAVAILABLE = "libkrun mode is not available here: "


class KrunUnavailableError(AgentboxError):
    pass


def check_krun_handler(runner: Runner) -> str:
    """crun's version line when it has the krun handler; ``KrunUnavailableError`` otherwise."""
    try:
        out = runner.run(["crun", "--version"]).stdout
    except CommandError as err:
        reason = "crun is not installed" if err.returncode is None else f"crun failed: {err}"
        raise KrunUnavailableError(UNAVAILABLE + reason, hint=HINT) from err
    first = out.splitlines()[0] if out else "crun"
    if "+LIBKRUN" not in out:
        raise KrunUnavailableError(f"{UNAVAILABLE}{first} is built without libkrun", hint=HINT)
    return first
