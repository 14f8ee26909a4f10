"""The watchdog that keeps a libkrun task whose VM stopped from hanging agentbox, tested with
real processes: a child standing in for `podman run`, and a process whose thread-group leader
has exited while another thread lives (what a stopped VMM with a stuck thread looks like)."""

import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox_cli.libkrun.task import TaskProbe, inspect_state
from agentbox_cli.libkrun.watchdog import Outcome, Timing, proc_stat, process_alive, run_watched
from agentbox_state.testing import RecordingRunner, require

FAST = Timing(interval=0.05, grace=0.3, settle=0.3, term_wait=1.0)


def pid_from(path: Path, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.01)
    raise AssertionError(f"no pid in {path}")


def test_a_command_whose_vm_is_gone_is_stopped_within_the_grace(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    outcome = run_watched(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 600"], env=None,
                          alive=lambda: False, timing=FAST)  # fmt: skip
    took = time.monotonic() - started
    assert outcome == Outcome(128 + signal.SIGTERM, stopped=True)
    assert took < FAST.grace + FAST.settle + 2.0
    assert proc_stat(pid_from(pidfile)) is None, "the stand-in for podman run is gone"


def test_sigkill_when_sigterm_is_not_enough(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"trap '' TERM; echo $$ > {pidfile}; while :; do sleep 0.05; done"
    outcome = run_watched(["sh", "-c", script], env=None, alive=lambda: False, timing=FAST)
    assert outcome == Outcome(128 + signal.SIGKILL, stopped=True)
    assert proc_stat(pid_from(pidfile)) is None


def test_reap_first_lets_the_command_return_on_its_own(tmp_path: Path) -> None:
    """Killing the stuck process is what makes `podman run` return; SIGTERM is not needed."""
    vmfile = tmp_path / "vm"
    script = f"sleep 600 & echo $! > {vmfile}; wait $!"
    calls: list[str] = []

    def reap() -> None:
        calls.append("reap")
        os.kill(pid_from(vmfile), signal.SIGKILL)

    outcome = run_watched(["sh", "-c", script], env=None, alive=lambda: False, reap=reap,
                          timing=FAST)  # fmt: skip
    assert calls == ["reap"]
    assert outcome == Outcome(128 + signal.SIGKILL, stopped=True)  # sh: `wait` saw the kill


def test_a_live_or_unknown_vm_never_stops_the_command() -> None:
    assert run_watched(["sh", "-c", "sleep 0.3; exit 7"], env=None, alive=lambda: True,
                       timing=FAST) == Outcome(7, stopped=False)  # fmt: skip
    assert run_watched(["sh", "-c", "sleep 0.5; exit 3"], env=None, alive=lambda: None,
                       timing=FAST) == Outcome(3, stopped=False)  # fmt: skip


def test_the_grace_counts_only_an_unbroken_absence() -> None:
    answers = iter([False, False, True] * 100)
    assert run_watched(["sh", "-c", "sleep 0.8"], env=None, alive=lambda: next(answers),
                       timing=FAST) == Outcome(0, stopped=False)  # fmt: skip


def test_proc_stat_reads_state_and_start_time_past_a_strange_name(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    fields = ["S", *["0"] * 18, "123456", "0", "0"]
    (tmp_path / "42" / "stat").write_text(f"42 (a) (b) c) {' '.join(fields)}\n")
    stat = proc_stat(42, os.fspath(tmp_path))
    assert stat is not None
    assert (stat.state, stat.start) == ("S", 123456)
    assert proc_stat(43, os.fspath(tmp_path)) is None
    assert process_alive(42, 123456, os.fspath(tmp_path))
    assert not process_alive(42, 123457, os.fspath(tmp_path)), "a reused pid is another process"


ZOMBIE_LEADER = """
import ctypes, threading, time
threading.Thread(target=time.sleep, args=(600,)).start()
print("ready", flush=True)
ctypes.CDLL(None).syscall(60, 0)  # SYS_exit (x86_64): ends the main thread only
"""


@pytest.fixture
def zombie_leader() -> Iterator[subprocess.Popen[str]]:
    """A process whose thread-group leader has exited while another thread sleeps: /proc shows
    it as Z, yet it is not reaped (what a stopped VMM with a stuck thread looks like)."""
    require(platform.machine() == "x86_64", "SYS_exit is syscall 60 on x86_64 only")
    proc = subprocess.Popen([sys.executable, "-c", ZOMBIE_LEADER], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 5
        while (stat := proc_stat(proc.pid)) is not None and stat.state != "Z":
            assert time.monotonic() < deadline, "the leader did not exit"
            time.sleep(0.01)
        yield proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_probe_sees_a_zombie_leader_with_a_live_thread(
    zombie_leader: subprocess.Popen[str],
) -> None:
    pid = zombie_leader.pid
    stat = proc_stat(pid)
    assert stat is not None
    assert stat.state == "Z"
    assert len(os.listdir(f"/proc/{pid}/task")) == 2, "the leader and the sleeping thread"
    assert not process_alive(pid, stat.start)
    runner = RecordingRunner()
    runner.script(*inspect_state("task"), stdout=f"running {pid}\n")
    probe = TaskProbe(runner, "task")
    assert probe() is False
    assert probe.watched == (pid, stat.start)
    probe.reap()  # SIGKILL: every thread ends, and the process can be reaped
    assert zombie_leader.wait(timeout=5) == -signal.SIGKILL


def test_the_probe_asks_podman_until_the_process_runs_then_only_proc(tmp_path: Path) -> None:
    live = subprocess.Popen(["sleep", "600"])
    try:
        runner = RecordingRunner()
        runner.script(*inspect_state("task"), returncode=125, stderr="no such container")
        probe = TaskProbe(runner, "task")
        assert probe() is None, "not created yet"
        runner.script(*inspect_state("task"), stdout="created 0\n")
        assert probe() is None, "not started yet"
        runner.script(*inspect_state("task"), stdout=f"running {live.pid}\n")
        assert probe() is True
        assert probe() is True
        assert len(runner.calls) == 3, "once it runs, only /proc is read"
        live.kill()
        live.wait()
        assert probe() is False
    finally:
        live.kill()
        live.wait()
    exited = RecordingRunner()
    exited.script(*inspect_state("task"), stdout="exited 0\n")
    assert TaskProbe(exited, "task")() is False
    TaskProbe(exited, "task").reap()  # nothing watched: nothing to kill


def test_the_probe_asks_podman_with_debug() -> None:
    assert inspect_state("task", debug=True) == [
        "podman", "--log-level=debug", "container", "inspect", "--format",
        "{{.State.Status}} {{.State.Pid}}", "task",
    ]  # fmt: skip
    runner = RecordingRunner()
    assert TaskProbe(runner, "task", debug=True)() is None
    assert runner.argvs == [inspect_state("task", debug=True)]
