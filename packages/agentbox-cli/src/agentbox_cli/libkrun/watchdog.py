"""Run a command with the terminal attached, and stop it when what it waits for has died.

`podman run` of a libkrun task can outlive its VM: when the VMM stops after crun handed over
(seen: KVM_EXIT_INTERNAL_ERROR, "Vmm is stopping"), the container's main process, whose
thread-group leader has exited, stays a zombie while a stuck thread lives on, so the container
never exits and `podman run` waits forever. `podman run` can also be merely slow after a normal
exit: Podman before 4.6 with ``--log-level=debug`` on a host without ``/dev/log`` waits about
20 s for its cleanup process (podman#19075).

``run_watched`` runs the command through the runner's ``interactive`` (its signal handling and
its stop sequence) and asks a liveness callable every ``interval`` seconds what it sees:

- ``True``: alive; ``None``: not known yet. Neither counts.
- ``False`` (gone or stuck) for ``grace`` seconds in a row: ``reap()`` ends what is stuck and
  the command is stopped (``stopped="stuck"``).
- ``Exited(code)`` (the container exited with ``code``; the command is finishing up) for
  ``exit_grace`` seconds: the command is stopped and ``code`` is the status
  (``stopped="after-exit"``).

The liveness of a process is read from ``/proc/PID/stat`` (``proc_stat``): no process, or state
``Z``/``X``, or another start time (a reused pid) is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from agentbox_state.runner import Runner, Watched


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    interval: float = 1.0  # between two liveness checks
    grace: float = 10.0  # gone or stuck for this long while the command runs: stop it
    exit_grace: float = 60.0  # exited for this long while the command runs: stop it
    settle: float = 3.0  # once stopping: how long the command gets to return on its own
    term_wait: float = 3.0  # after SIGTERM, before SIGKILL


DEFAULT_TIMING = Timing()


@dataclass(frozen=True, slots=True)
class Exited:
    """The watched container exited with ``code``: what is left is the command finishing up."""

    code: int


Seen = bool | Exited | None
Stopped = Literal["stuck", "after-exit"]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int  # the shell-style exit status (128+N for signal N); after-exit: the container's
    stopped: Stopped | None = None  # why the watchdog stopped the command, if it did


@dataclass(frozen=True, slots=True)
class ProcStat:
    state: str  # R, S, D, Z, X, ...
    start: int  # start time in clock ticks since boot: tells a reused pid apart


def proc_stat(pid: int, proc: str = "/proc") -> ProcStat | None:
    """State and start time of ``pid`` from ``/proc/PID/stat``; None when there is none."""
    try:
        with open(f"{proc}/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses; field 22 is starttime.
    fields = text[text.rfind(")") + 1 :].split()
    if len(fields) < 20:
        return None
    return ProcStat(state=fields[0], start=int(fields[19]))


def process_alive(pid: int, start: int, proc: str = "/proc") -> bool:
    """Is the process that had ``start`` still there and not a zombie (leader)?"""
    stat = proc_stat(pid, proc)
    return stat is not None and stat.start == start and stat.state not in ("Z", "X")


class _Watchdog:
    """The watch callback: counts how long one kind of absence has lasted, unbroken."""

    def __init__(
        self, alive: Callable[[], Seen], reap: Callable[[], None] | None, timing: Timing
    ) -> None:
        self.alive = alive
        self.reap = reap
        self.timing = timing
        self.kind: Stopped | None = None  # what was seen last: gone/stuck, or exited
        self.since = 0.0
        self.code = 0
        self.stopped: Stopped | None = None

    def __call__(self, watched: Watched) -> None:
        seen, now = self.alive(), watched.elapsed()
        kind: Stopped | None = None
        if isinstance(seen, Exited):
            kind, self.code = "after-exit", seen.code
        elif seen is False:
            kind = "stuck"
        if kind != self.kind:
            self.kind, self.since = kind, now
        wait = self.timing.grace if kind == "stuck" else self.timing.exit_grace
        if kind is None or now - self.since < wait:
            return
        if kind == "stuck" and self.reap is not None:
            self.reap()
        self.stopped = kind
        watched.stop(settle=self.timing.settle, term_wait=self.timing.term_wait)


def run_watched(
    runner: Runner,
    argv: Sequence[str],
    *,
    alive: Callable[[], Seen],
    reap: Callable[[], None] | None = None,
    timing: Timing = DEFAULT_TIMING,
) -> Outcome:
    """Run ``argv`` with the terminal attached (``runner.interactive``) until it exits, or until
    ``alive()`` has said one kind of absence long enough (see the module): then it is stopped."""
    dog = _Watchdog(alive, reap, timing)
    status = runner.interactive(argv, watch=dog, interval=timing.interval)
    if dog.stopped == "after-exit":
        return Outcome(dog.code, stopped="after-exit")
    return Outcome(status, stopped=dog.stopped)
