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

from agentbox_cli.libkrun.task import (
    TaskProbe,
    VmStoppedError,
    inspect_exit,
    inspect_state,
    run_task,
)
from agentbox_cli.libkrun.watchdog import (
    Exited,
    Outcome,
    Seen,
    Timing,
    proc_stat,
    process_alive,
    run_watched,
)
from agentbox_podman.podman import RunSpec
from agentbox_state.runner import SubprocessRunner
from agentbox_state.testing import RecordingRunner
from agentbox_testing import require

FAST = Timing(interval=0.05, grace=0.3, exit_grace=1.5, settle=0.3, term_wait=1.0)
RUNNER = SubprocessRunner(os.environ)


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
    outcome = run_watched(RUNNER, ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 600"],
                          alive=lambda: False, timing=FAST)  # fmt: skip
    took = time.monotonic() - started
    assert outcome == Outcome(128 + signal.SIGTERM, stopped="stuck")
    assert took < FAST.grace + FAST.settle + 2.0
    assert proc_stat(pid_from(pidfile)) is None, "the stand-in for podman run is gone"


def test_sigkill_when_sigterm_is_not_enough(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"trap '' TERM; echo $$ > {pidfile}; while :; do sleep 0.05; done"
    outcome = run_watched(RUNNER, ["sh", "-c", script], alive=lambda: False, timing=FAST)
    assert outcome == Outcome(128 + signal.SIGKILL, stopped="stuck")
    assert proc_stat(pid_from(pidfile)) is None


def test_reap_first_lets_the_command_return_on_its_own(tmp_path: Path) -> None:
    """Killing the stuck process is what makes `podman run` return; SIGTERM is not needed."""
    vmfile = tmp_path / "vm"
    script = f"sleep 600 & echo $! > {vmfile}; wait $!"
    calls: list[str] = []

    def reap() -> None:
        calls.append("reap")
        os.kill(pid_from(vmfile), signal.SIGKILL)

    outcome = run_watched(RUNNER, ["sh", "-c", script], alive=lambda: False, reap=reap,
                          timing=FAST)  # fmt: skip
    assert calls == ["reap"]
    assert outcome == Outcome(128 + signal.SIGKILL, stopped="stuck")  # sh: `wait` saw the kill


def test_a_live_or_unknown_vm_never_stops_the_command() -> None:
    assert run_watched(RUNNER, ["sh", "-c", "sleep 0.3; exit 7"], alive=lambda: True,
                       timing=FAST) == Outcome(7)  # fmt: skip
    assert run_watched(RUNNER, ["sh", "-c", "sleep 0.5; exit 3"], alive=lambda: None,
                       timing=FAST) == Outcome(3)  # fmt: skip


def test_the_grace_counts_only_an_unbroken_absence() -> None:
    answers = iter([False, False, True] * 100)
    assert run_watched(RUNNER, ["sh", "-c", "sleep 0.8"], alive=lambda: next(answers),
                       timing=FAST) == Outcome(0)  # fmt: skip


def test_after_a_normal_exit_the_command_gets_the_exit_grace_not_the_grace() -> None:
    """`podman run` slow to return after its container exited (podman#19075) is not a stopped
    VM: a command that takes longer than the grace, but less than the exit grace, returns on
    its own with its own status, nothing reaped."""
    reaped: list[str] = []
    started = time.monotonic()
    outcome = run_watched(RUNNER, ["sh", "-c", "sleep 0.9; exit 0"], alive=lambda: Exited(0),
                          reap=lambda: reaped.append("reap"), timing=FAST)  # fmt: skip
    assert outcome == Outcome(0)
    assert time.monotonic() - started >= 0.9 > FAST.grace
    assert reaped == []


def test_past_the_exit_grace_the_command_is_stopped_with_the_containers_status(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "pid"
    reaped: list[str] = []
    started = time.monotonic()
    outcome = run_watched(RUNNER, ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 600"],
                          alive=lambda: Exited(5), reap=lambda: reaped.append("reap"),
                          timing=FAST)  # fmt: skip
    took = time.monotonic() - started
    assert outcome == Outcome(5, stopped="after-exit")
    assert FAST.exit_grace <= took < FAST.exit_grace + FAST.settle + 2.0
    assert reaped == [], "nothing is stuck: nothing to kill"
    assert proc_stat(pid_from(pidfile)) is None


def test_a_zombie_that_turns_into_an_exit_restarts_the_count() -> None:
    """Stuck for less than the grace, then gone with an exit: the exit grace counts from then."""
    answers: list[Seen] = [False] * 4 + [Exited(0)] * 1000
    seen = iter(answers)
    assert run_watched(RUNNER, ["sh", "-c", "sleep 0.8; exit 2"], alive=lambda: next(seen),
                       timing=FAST) == Outcome(2)  # fmt: skip


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


def test_the_probe_asks_podman_until_the_process_runs_then_only_proc() -> None:
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
        runner.script(*inspect_exit("task"), stdout="running 0\n")
        assert probe() is False, "gone, and Podman has not seen the exit (yet)"
        runner.script(*inspect_exit("task"), stdout="exited 3\n")
        assert probe() == Exited(3), "gone: asked again, and now Podman says it exited"
        assert probe() == Exited(3)
        assert runner.argvs[3:] == [inspect_exit("task")] * 2, "an exit is kept, not asked again"
    finally:
        live.kill()
        live.wait()


def test_the_probe_of_a_container_that_exited_before_it_was_seen_running() -> None:
    for status in ("exited", "stopped"):
        runner = RecordingRunner()
        runner.script(*inspect_state("task"), stdout=f"{status} 0\n")
        runner.script(*inspect_exit("task"), stdout=f"{status} 7\n")
        probe = TaskProbe(runner, "task")
        assert probe() == Exited(7)
        probe.reap()  # nothing watched: nothing to kill
        assert runner.argvs == [inspect_state("task"), inspect_exit("task")]
    removed = RecordingRunner()
    removed.script(*inspect_state("task"), stdout="exited 0\n")
    removed.script(*inspect_exit("task"), returncode=125, stderr="no such container")
    assert TaskProbe(removed, "task")() is False, "no exit status to be had: not an exit"


def test_the_probe_asks_podman_with_debug() -> None:
    assert inspect_state("task", debug=True) == [
        "podman", "--log-level=debug", "container", "inspect", "--format",
        "{{.State.Status}} {{.State.Pid}}", "task",
    ]  # fmt: skip
    assert inspect_exit("task", debug=True) == [
        "podman", "--log-level=debug", "container", "inspect", "--format",
        "{{.State.Status}} {{.State.ExitCode}}", "task",
    ]  # fmt: skip
    runner = RecordingRunner()
    assert TaskProbe(runner, "task", debug=True)() is None
    assert runner.argvs == [inspect_state("task", debug=True)]


SPEC = RunSpec(image="img", name="task", command=("true",), debug=True)
RUN = ["podman", "--log-level=debug", "run", "--rm", "--name", "task", "img", "true"]
STATE = inspect_state("task", debug=True)
EXIT = inspect_exit("task", debug=True)
REMOVE = ["podman", "--log-level=debug", "rm", "--force", "--ignore", "task"]


def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_run_task_a_slow_podman_run_after_a_normal_exit_returns_the_containers_status() -> None:
    """The whole decision with the default timing, in simulated time: the task's process is
    gone and Podman says the container exited (status 3), podman run does not return for 70 s:
    the grace (10 s) does not apply, the exit grace (60 s) does; then podman run is stopped,
    the container removed, and the status is the container's, with a notice."""
    runner = RecordingRunner()
    runner.script(*RUN, runs_for=70.0)
    runner.script(*STATE, stdout=f"running {dead_pid()}\n")
    runner.script(*EXIT, stdout="stopped 3\n")
    notices: list[str] = []
    assert run_task(runner, SPEC, notice=notices.append) == 3
    assert runner.argvs == [RUN, STATE, EXIT, REMOVE]
    assert runner.calls[0].stopped
    assert notices == [
        "agentbox: task task exited with status 3, but podman run had not returned 60 s later; "
        "agentbox stopped it and removed the container (podman before 4.6 with "
        "--log-level=debug and no /dev/log: podman#19075)"
    ]


def test_run_task_a_podman_run_that_returns_within_the_exit_grace_is_left_alone() -> None:
    """podman#19075's 20 s wait after a normal exit: podman run returns on its own."""
    runner = RecordingRunner()
    runner.script(*RUN, runs_for=21.0, returncode=0)
    runner.script(*STATE, stdout="stopped 0\n")
    runner.script(*EXIT, stdout="stopped 0\n")
    notices: list[str] = []
    assert run_task(runner, SPEC, notice=notices.append) == 0
    assert runner.argvs == [RUN, STATE, EXIT]
    assert not runner.calls[0].stopped
    assert notices == []


def test_run_task_gone_without_an_exit_is_a_stopped_vm_after_the_grace() -> None:
    runner = RecordingRunner()
    runner.script(*RUN, runs_for=600.0)
    runner.script(*STATE, stdout=f"running {dead_pid()}\n")
    runner.script(*EXIT, stdout="running 0\n")  # Podman never sees it end
    with pytest.raises(VmStoppedError) as caught:
        run_task(runner, SPEC, notice=lambda line: pytest.fail(line))
    assert caught.value.message == (
        "the VM of task task stopped, but podman run did not return; agentbox stopped podman "
        "run and removed the container"
    )
    # Podman says "running", its pid is gone, and Podman sees no exit: asked every second
    # (t=1..11), gone from t=1: stopped at t=11, 10 s later.
    assert runner.argvs == [RUN, *[STATE, EXIT] * 11, REMOVE]
    assert runner.calls[0].stopped


def test_run_task_a_zombie_leader_is_a_stopped_vm_without_asking_podman(
    zombie_leader: subprocess.Popen[str],
) -> None:
    runner = RecordingRunner()
    runner.script(*RUN, runs_for=600.0)
    runner.script(*STATE, stdout=f"running {zombie_leader.pid}\n")
    with pytest.raises(VmStoppedError):
        run_task(runner, SPEC, notice=lambda line: pytest.fail(line))
    assert runner.argvs == [RUN, STATE, REMOVE], "a zombie leader is stuck: no exit to ask for"
    assert zombie_leader.wait(timeout=5) == -signal.SIGKILL, "reaped: every thread ended"
