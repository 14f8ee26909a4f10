"""Sending ``stop``'s or ``kill``'s signal (a ``inventory.Signal``) and waiting for the end."""

from __future__ import annotations

import os
import time

from agentbox_cli.tasks.inventory import Signal, TaskError
from agentbox_state.errors import CommandError
from agentbox_state.runner import Runner

POLL = 0.1


def _gone(pid: int) -> bool:
    """No such process, or one that ended and waits to be reaped (a zombie, proc(5) state Z)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rpartition(")")[2].split()[:1]
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return state in (["Z"], ["X"])


def send(plan: Signal, runner: Runner, *, wait: float) -> bool:
    """Carry out ``plan``; whether the task ended within ``wait`` seconds (``podman stop`` and
    ``podman kill`` return once the container has been told; stop waits for its end)."""
    if plan.argv:
        try:
            runner.run(plan.argv)
        except CommandError as err:
            raise TaskError(f"{plan.describe()} failed: {err.stderr_tail or err.message}",
                            hint="'agentbox ps' shows whether it still runs") from err  # fmt: skip
        return True
    assert plan.pid is not None
    try:
        os.kill(plan.pid, plan.signal)
    except ProcessLookupError:
        return True  # it ended on its own meanwhile
    except PermissionError as err:
        raise TaskError(f"{plan.describe()}: not permitted (the process is not yours)",
                        hint="stop it as the user who started it") from err  # fmt: skip
    deadline = time.monotonic() + wait
    while not _gone(plan.pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True
