"""Run a libkrun-mode ``podman run`` (a task or resize's one-shot guest) under the watchdog.

While `podman run` runs, the container's main process (the VMM crun handed over to) is
watched: Podman is asked once a second for its state and pid until it runs, then only
``/proc/PID/stat`` is read. Two ways it can end while `podman run` has not returned:

- It is a zombie (its thread-group leader exited while a stuck thread lives: a VM that stopped
  after crun handed over), or gone without Podman saying the container exited, for the grace
  period: the stuck process is killed, `podman run` is stopped (SIGTERM, then SIGKILL), the
  container is removed, and ``VmStoppedError`` says so.
- It is gone and Podman says the container exited (``{{.State.Status}} {{.State.ExitCode}}``):
  the command did finish, and `podman run` is only slow to return (podman#19075: before 4.6,
  ``--log-level=debug`` on a host without ``/dev/log`` waits ~20 s for its cleanup). It gets
  the exit grace (60 s); if it still has not returned, it is stopped, the container removed,
  and the container's own exit status is the result, with a one-line notice.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable

from agentbox_cli.libkrun.watchdog import (
    DEFAULT_TIMING,
    Exited,
    Seen,
    Timing,
    proc_stat,
    run_watched,
)
from agentbox_podman import podman
from agentbox_podman.podman import RunSpec
from agentbox_state.errors import AgentboxError
from agentbox_state.runner import Runner

# Podman's states before the container's process exists, while it should, and once it ended.
NOT_YET = frozenset({"", "created", "configured", "initialized"})
RUNNING = frozenset({"running", "paused", "stopping"})
EXITED = frozenset({"exited", "stopped", "removing"})


class VmStoppedError(AgentboxError):
    """The VM of a task stopped, and `podman run` did not return: agentbox stopped it."""


def inspect_state(name: str, *, debug: bool = False) -> list[str]:
    """Prints ``<status> <pid>`` (pid 0 when there is no process)."""
    return [*podman.podman_argv(debug=debug), "container", "inspect", "--format",
            "{{.State.Status}} {{.State.Pid}}", name]  # fmt: skip


def inspect_exit(name: str, *, debug: bool = False) -> list[str]:
    """Prints ``<status> <exit code>``: asked once the container's process is gone."""
    return [*podman.podman_argv(debug=debug), "container", "inspect", "--format",
            "{{.State.Status}} {{.State.ExitCode}}", name]  # fmt: skip


class TaskProbe:
    """What is the container's main process doing? (``watchdog.Seen``): None until Podman has
    started it, True while it lives, False while it is a zombie leader (stuck) or gone without
    Podman saying that the container exited, ``Exited(code)`` once Podman says so (kept)."""

    def __init__(
        self, runner: Runner, name: str, *, debug: bool = False, proc: str = "/proc"
    ) -> None:
        self.runner = runner
        self.name = name
        self.debug = debug
        self.proc = proc
        self.watched: tuple[int, int] | None = None  # (pid, start time) once it runs
        self.exited: Exited | None = None

    def _inspect(self, argv: list[str]) -> tuple[str, str] | None:
        try:
            done = self.runner.run(argv, check=False)
        except AgentboxError:
            return None
        if done.returncode != 0:  # not created yet, or already removed
            return None
        status, _, value = done.stdout.strip().partition(" ")
        return status, value

    def _gone(self) -> Seen:
        """The process is gone: did the container exit (and with what status)?"""
        answer = self._inspect(inspect_exit(self.name, debug=self.debug))
        if answer is None or answer[0] not in EXITED or not answer[1].lstrip("-").isdigit():
            return False
        self.exited = Exited(int(answer[1]))
        return self.exited

    def _ask_podman(self) -> Seen:
        answer = self._inspect(inspect_state(self.name, debug=self.debug))
        if answer is None:  # not created yet (or already removed: podman run returns)
            return None
        status, pid = answer
        if status in NOT_YET:
            return None
        if status not in RUNNING:  # exited or stopped: podman run should be returning
            return self._gone()
        if not pid.isdigit() or int(pid) == 0:
            return None
        stat = proc_stat(int(pid), self.proc)
        if stat is None:  # gone between Podman's answer and this read
            return self._gone()
        self.watched = (int(pid), stat.start)
        return stat.state not in ("Z", "X")

    def __call__(self) -> Seen:
        if self.exited is not None:
            return self.exited
        if self.watched is None:
            return self._ask_podman()
        pid, start = self.watched
        stat = proc_stat(pid, self.proc)
        if stat is None or stat.start != start or stat.state == "X":
            return self._gone()
        return stat.state != "Z"  # a zombie leader: its threads (the VM) may live on

    def reap(self) -> None:
        """SIGKILL the stuck process (all its threads), if it is still the one watched. (A
        rootless task's process runs as a subordinate id, in a user namespace the user owns:
        the user may signal it.)"""
        if self.watched is None:
            return
        pid, start = self.watched
        stat = proc_stat(pid, self.proc)
        if stat is None or stat.start != start:
            return
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours: podman run is
            os.kill(pid, signal.SIGKILL)  # stopped next either way


def run_task(
    runner: Runner,
    spec: RunSpec,
    *,
    notice: Callable[[str], None],
    timing: Timing = DEFAULT_TIMING,
) -> int:
    """``spec``'s `podman run`, terminal attached, under the watchdog; its exit status."""
    probe = TaskProbe(runner, spec.name, debug=spec.debug)
    outcome = run_watched(runner, spec.argv(), alive=probe, reap=probe.reap, timing=timing)
    if outcome.stopped is None:
        return outcome.status
    runner.run(podman.remove(spec.name, debug=spec.debug), check=False)
    if outcome.stopped == "after-exit":
        notice(f"agentbox: task {spec.name} exited with status {outcome.status}, but podman run "
               f"had not returned {timing.exit_grace:g} s later; agentbox stopped it and removed "
               "the container (podman before 4.6 with --log-level=debug and no /dev/log: "
               "podman#19075)")  # fmt: skip
        return outcome.status
    raise VmStoppedError(
        f"the VM of task {spec.name} stopped, but podman run did not return; agentbox stopped "
        "podman run and removed the container",
        hint="rerun with --debug to see what crun and libkrun said; `agentbox container` runs "
        "the same image without a VM",
    )
