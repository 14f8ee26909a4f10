"""Run a command with the terminal attached, and stop it when what it waits for has died.

`podman run` of a libkrun task can outlive its VM: when the VMM stops after crun handed over
(seen: KVM_EXIT_INTERNAL_ERROR, "Vmm is stopping"), the container's main process, whose
thread-group leader has exited, stays a zombie while a stuck thread lives on, so the container
never exits and `podman run` waits forever. ``run_watched`` runs the command as the runner's
``interactive`` does (same signal handling) and asks a liveness callable every ``interval``
seconds; once it has said "gone" for ``grace`` seconds in a row, the command is stopped.

The liveness of a process is read from ``/proc/PID/stat`` (``proc_stat``): no process, or state
``Z``/``X``, or another start time (a reused pid) is gone.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agentbox_state.errors import CommandError
from agentbox_state.runner import exit_status


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    interval: float = 1.0  # between two liveness checks
    grace: float = 10.0  # gone for this long while the command runs: stop it
    settle: float = 3.0  # after ``reap``: how long the command gets to return on its own
    term_wait: float = 3.0  # after SIGTERM, before SIGKILL


DEFAULT_TIMING = Timing()


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int  # the shell-style exit status (128+N for signal N)
    stopped: bool  # True when the watchdog stopped the command


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


class Child(Protocol):
    """What the watchdog needs of the process it runs (a ``subprocess.Popen``)."""

    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


def _wait(proc: Child, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=max(timeout, 0.0))
    except subprocess.TimeoutExpired:
        return None


def _stop(proc: Child, timing: Timing) -> int:
    """Give the command ``settle`` seconds, then SIGTERM, then SIGKILL; its returncode."""
    returncode = _wait(proc, timing.settle)
    if returncode is None:
        proc.terminate()
        returncode = _wait(proc, timing.term_wait)
    if returncode is None:
        proc.kill()
        returncode = proc.wait()
    return returncode


def run_watched(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    alive: Callable[[], bool | None],
    reap: Callable[[], None] | None = None,
    timing: Timing = DEFAULT_TIMING,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Run ``argv`` with the terminal attached until it exits, or until ``alive()`` has said
    False (gone) for ``timing.grace`` seconds; None means "not known yet" and never counts.
    Then ``reap()`` (end what is stuck), and the command is stopped (``_stop``).

    As in the runner's ``interactive``, Ctrl-C and Ctrl-\\ belong to the command while it runs,
    and SIGTERM or SIGHUP sent to us is passed on to it."""
    try:
        # The watchdog must own the process to poll and signal it; its environment is the
        # runner's (the caller passes SubprocessRunner.child_env).
        proc: Child = subprocess.Popen(list(argv), env=None if env is None else dict(env))  # noqa: TID251
    except OSError as err:
        raise CommandError(f"cannot run {argv[0]}: {err.strerror or err}", argv=tuple(argv),
                           returncode=None) from err  # fmt: skip
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        proc.send_signal(signum)

    saved = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGQUIT: signal.signal(signal.SIGQUIT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGHUP: signal.signal(signal.SIGHUP, forward),
    }
    try:
        gone_since: float | None = None
        while True:
            returncode = _wait(proc, timing.interval)
            if returncode is not None:
                if returncode == 0 and received:  # see SubprocessRunner.interactive
                    return Outcome(128 + received[0], stopped=False)
                return Outcome(exit_status(returncode), stopped=False)
            if alive() is False:
                now = clock()
                gone_since = now if gone_since is None else gone_since
                if now - gone_since >= timing.grace:
                    break
            else:
                gone_since = None
        if reap is not None:
            reap()
        return Outcome(exit_status(_stop(proc, timing)), stopped=True)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
