"""Run a libkrun-mode ``podman run`` (a task or resize's one-shot guest) under the watchdog.

While `podman run` runs, the container's main process (the VMM crun handed over to) is
watched: Podman is asked once a second for its state and pid until it runs, then only
``/proc/PID/stat`` is read. When that process has been gone or a zombie for the grace period
and `podman run` has not returned, the stuck process is killed, `podman run` is stopped
(SIGTERM, then SIGKILL), the container is removed, and ``VmStoppedError`` says so.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable

from agentbox_cli.libkrun.watchdog import (
    DEFAULT_TIMING,
    Timing,
    proc_stat,
    process_alive,
    run_watched,
)
from agentbox_podman import podman
from agentbox_podman.podman import RunSpec
from agentbox_state.errors import AgentboxError
from agentbox_state.runner import Runner, SubprocessRunner, command_line

# Podman's states before the container's process exists, and while it should.
NOT_YET = frozenset({"", "created", "configured", "initialized"})
RUNNING = frozenset({"running", "paused", "stopping"})


class VmStoppedError(AgentboxError):
    """The VM of a task stopped, and `podman run` did not return: agentbox stopped it."""


def inspect_state(name: str, *, debug: bool = False) -> list[str]:
    """Prints ``<status> <pid>`` (pid 0 when there is no process)."""
    return [*podman.podman_argv(debug=debug), "container", "inspect", "--format",
            "{{.State.Status}} {{.State.Pid}}", name]  # fmt: skip


class TaskProbe:
    """Is the container's main process alive? None until Podman has started it."""

    def __init__(
        self, runner: Runner, name: str, *, debug: bool = False, proc: str = "/proc"
    ) -> None:
        self.runner = runner
        self.name = name
        self.debug = debug
        self.proc = proc
        self.watched: tuple[int, int] | None = None  # (pid, start time) once it runs

    def _ask_podman(self) -> bool | None:
        try:
            done = self.runner.run(inspect_state(self.name, debug=self.debug), check=False)
        except AgentboxError:
            return None
        if done.returncode != 0:  # not created yet (or already removed: podman run returns)
            return None
        status, _, pid = done.stdout.strip().partition(" ")
        if status in NOT_YET:
            return None
        if status not in RUNNING:  # exited or stopped: podman run should be returning
            return False
        if not pid.isdigit() or int(pid) == 0:
            return None
        stat = proc_stat(int(pid), self.proc)
        if stat is None:  # gone between Podman's answer and this read
            return False
        self.watched = (int(pid), stat.start)
        return stat.state not in ("Z", "X")

    def __call__(self) -> bool | None:
        if self.watched is None:
            return self._ask_podman()
        return process_alive(*self.watched, self.proc)

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
    runner: SubprocessRunner,
    spec: RunSpec,
    *,
    echo: Callable[[str], None] | None = None,
    timing: Timing = DEFAULT_TIMING,
) -> int:
    """``spec``'s `podman run`, terminal attached, under the watchdog; its exit status."""
    argv = spec.argv()
    if echo is not None:
        echo(f"+ {command_line(argv)}")
    probe = TaskProbe(runner, spec.name, debug=spec.debug)
    outcome = run_watched(argv, env=runner.child_env(None, terminal=True), alive=probe,
                          reap=probe.reap, timing=timing)  # fmt: skip
    if not outcome.stopped:
        return outcome.status
    runner.run(podman.remove(spec.name, debug=spec.debug), check=False)
    raise VmStoppedError(
        f"the VM of task {spec.name} stopped, but podman run did not return; agentbox stopped "
        "podman run and removed the container",
        hint="rerun with --debug to see what crun and libkrun said; `agentbox container` runs "
        "the same image without a VM",
    )
