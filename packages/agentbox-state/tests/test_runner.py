"""The runner against real processes; the recording runner against the same expectations."""

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agentbox_state.errors import CommandError
from agentbox_state.runner import (
    Completed,
    SubprocessRunner,
    Watched,
    command_line,
    exit_status,
    stderr_tail,
)
from agentbox_state.testing import STOPPED_STATUS, Call, RecordingRunner

ENV = {"PATH": "/usr/bin:/bin", "HOME": "/home/u", "SECRET_TOKEN": "x", "TERM": "xterm"}


def test_captures_output() -> None:
    result = SubprocessRunner(ENV).run(["sh", "-c", "echo out; echo err >&2"])
    assert result == Completed(("sh", "-c", "echo out; echo err >&2"), 0, "out\n", "err\n")


def test_input_is_passed() -> None:
    assert SubprocessRunner(ENV).run(["cat"], input="hello").stdout == "hello"


def test_stdin_is_closed_without_input() -> None:
    assert SubprocessRunner(ENV).run(["cat"]).stdout == ""


def test_environment_is_minimal_and_explicit() -> None:
    out = SubprocessRunner(ENV).run(["env"], env={"EXTRA": "1"}).stdout
    seen = dict(line.split("=", 1) for line in out.splitlines())
    assert seen == {"PATH": "/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin", "HOME": "/home/u",
                    "LANG": "C.UTF-8", "EXTRA": "1"}  # fmt: skip


def test_interactive_environment_keeps_the_terminal() -> None:
    env = SubprocessRunner({**ENV, "LANG": "de_DE.UTF-8"}).child_env(None, terminal=True)
    assert env == {"PATH": "/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin", "HOME": "/home/u",
                   "TERM": "xterm", "LANG": "de_DE.UTF-8"}  # fmt: skip


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/usr/local/bin:/usr/bin:/bin",
         "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"),
        ("/usr/sbin:/usr/bin", "/usr/sbin:/usr/bin:/usr/local/sbin:/sbin"),  # order kept
        ("/usr/local/sbin:/usr/sbin:/sbin", "/usr/local/sbin:/usr/sbin:/sbin"),
    ],
)  # fmt: skip
def test_sbin_dirs_are_appended_when_missing(path: str, expected: str) -> None:
    """An ordinary Debian user's PATH lacks sbin, where mkfs.btrfs and blkid live."""
    from agentbox_state.runner import with_sbin

    assert with_sbin(path) == expected


def test_default_path_when_unset() -> None:
    env = SubprocessRunner({}).child_env(None, terminal=False)
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_failure_carries_status_and_stderr_tail() -> None:
    script = "for i in $(seq 1 30); do echo line$i >&2; done; exit 3"
    with pytest.raises(CommandError) as caught:
        SubprocessRunner(ENV).run(["sh", "-c", script])
    err = caught.value
    assert err.returncode == 3
    assert err.argv == ("sh", "-c", script)
    tail = "\n".join(f"line{i}" for i in range(11, 31))
    assert err.stderr_tail == tail
    indented = "\n".join(f"  line{i}" for i in range(11, 31))
    assert err.message == f"`sh -c {shlex.quote(script)}` failed with exit status 3\n{indented}"


def test_a_failure_whose_tool_names_its_remedy_carries_it_as_the_hint() -> None:
    # podman 5.4's words when its recorded pause process and containers are gone
    said = (
        'level=error msg="invalid internal status, try resetting the pause process with '
        '\\"podman system migrate\\": could not find any running process: no such process"'
    )
    with pytest.raises(CommandError) as caught:
        SubprocessRunner(ENV).run(["sh", "-c", f"echo '{said}' >&2; exit 125"])
    assert caught.value.hint == (
        "Podman's rootless state names processes that are gone: run `podman system migrate` "
        "(it marks their containers stopped), then retry"
    )
    with pytest.raises(CommandError) as other:
        SubprocessRunner(ENV).run(["sh", "-c", "echo 'Error: no such image' >&2; exit 125"])
    assert other.value.hint is None


def test_unchecked_failure_returns() -> None:
    assert SubprocessRunner(ENV).run(["false"], check=False).returncode == 1


def test_signal_death_is_named() -> None:
    with pytest.raises(CommandError) as caught:
        SubprocessRunner(ENV).run(["sh", "-c", "kill -KILL $$"])
    assert caught.value.returncode == -9
    assert caught.value.message == "`sh -c 'kill -KILL $$'` was killed by SIGKILL"


def test_not_found() -> None:
    with pytest.raises(CommandError) as caught:
        SubprocessRunner(ENV).run(["agentbox-no-such-tool", "--x"])
    assert caught.value.returncode is None
    assert caught.value.message == (
        "cannot run agentbox-no-such-tool: it is not installed or not on PATH"
    )
    assert caught.value.hint == (
        "install agentbox-no-such-tool (see the README's requirements) or add its directory to PATH"
    )


def test_not_executable(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    with pytest.raises(CommandError) as caught:
        SubprocessRunner(ENV).run([str(tool)])
    assert caught.value.message == f"cannot run {tool}: permission denied"


def test_debug_echo_is_a_line_you_can_paste(tmp_path: Path) -> None:
    lines: list[str] = []
    runner = SubprocessRunner(ENV, echo=lines.append)
    target = tmp_path / "it's here"
    runner.run(["sh", "-c", 'printf %s "$GREETING" > "$1"', "sh", str(target)],
               env={"GREETING": "hi there"})  # fmt: skip
    assert len(lines) == 1
    assert lines[0].startswith("+ GREETING='hi there' sh -c ")
    target.unlink()
    subprocess.run(["sh", "-c", lines[0].removeprefix("+ ")], check=True)  # paste it
    assert target.read_text() == "hi there"


@pytest.mark.parametrize(
    ("script", "status"),
    [("exit 0", 0), ("exit 7", 7), ("kill -TERM $$", 128 + signal.SIGTERM),
     ("kill -KILL $$", 137)],
)  # fmt: skip
def test_interactive_propagates_exit_status(script: str, status: int) -> None:
    assert SubprocessRunner(ENV).interactive(["sh", "-c", script]) == status


def test_interactive_restores_signal_handlers() -> None:
    before = signal.getsignal(signal.SIGINT)
    SubprocessRunner(ENV).interactive(["true"])
    assert signal.getsignal(signal.SIGINT) is before


def test_interactive_not_found() -> None:
    with pytest.raises(CommandError, match="cannot run agentbox-no-such-tool"):
        SubprocessRunner(ENV).interactive(["agentbox-no-such-tool"])


@pytest.mark.parametrize(("returncode", "status"), [(0, 0), (1, 1), (255, 255), (-15, 143)])
def test_exit_status(returncode: int, status: int) -> None:
    assert exit_status(returncode) == status


def test_command_line_quotes() -> None:
    assert command_line(["echo", "a b", "$x"], {"K": "v w"}) == "K='v w' echo 'a b' '$x'"


def test_stderr_tail_skips_blank_lines() -> None:
    assert stderr_tail("\n\na\n\nb\n  \n", lines=1) == "b"


def test_recording_runner_records_and_scripts() -> None:
    rec = RecordingRunner()
    rec.script("podman", "image", "exists", returncode=1)
    rec.script("podman", "image", returncode=0, stdout="longest prefix wins?")
    assert rec.run(["podman", "image", "exists", "x"], check=False).returncode == 1
    assert rec.run(["podman", "image", "ls"]).stdout == "longest prefix wins?"
    assert rec.run(["buildah", "from", "x"], env={"A": "1"}) == Completed(
        ("buildah", "from", "x"), 0
    )
    assert rec.interactive(["podman", "run", "-it"]) == 0
    assert rec.argvs == [
        ["podman", "image", "exists", "x"],
        ["podman", "image", "ls"],
        ["buildah", "from", "x"],
        ["podman", "run", "-it"],
    ]
    assert rec.calls[2] == Call(("buildah", "from", "x"), {"A": "1"})
    assert rec.calls[3].interactive


def test_recording_runner_fails_like_the_real_one() -> None:
    rec = RecordingRunner()
    rec.script("sh", returncode=3, stderr="boom\n")
    with pytest.raises(CommandError) as recorded:
        rec.run(["sh", "-c", "echo boom >&2; exit 3"])
    with pytest.raises(CommandError) as real:
        SubprocessRunner(ENV).run(["sh", "-c", "echo boom >&2; exit 3"])
    assert recorded.value.message == real.value.message
    assert recorded.value.returncode == real.value.returncode == 3


def test_interactive_reports_a_forwarded_termination() -> None:
    """A child that swallows the SIGTERM we pass on and exits 0 (as podman run does) still
    ends the run as terminated."""
    import threading

    script = "trap 'exit 0' TERM; sleep 30 & wait"
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        status = SubprocessRunner(ENV).interactive(["sh", "-c", script])
    finally:
        timer.join()
    assert status == 128 + signal.SIGTERM


def test_interactive_watch_is_called_while_the_command_runs(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    seen: list[tuple[int, float]] = []

    def watch(watched: Watched) -> None:
        seen.append((watched.pid, watched.elapsed()))

    status = SubprocessRunner(ENV).interactive(
        ["sh", "-c", f"echo $$ > {pidfile}; sleep 0.55; exit 4"], watch=watch, interval=0.1
    )
    assert status == 4
    assert 3 <= len(seen) <= 6, "about every interval until it exited, then never again"
    assert {pid for pid, _ in seen} == {int(pidfile.read_text())}
    times = [t for _, t in seen]
    assert times == sorted(times)
    assert 0.1 <= times[0] < 0.3


def stop_at(after: float, **timing: float) -> Callable[[Watched], None]:
    def watch(watched: Watched) -> None:
        if watched.elapsed() >= after:
            watched.stop(**timing)

    return watch


@pytest.mark.parametrize(
    ("script", "status"),
    [("exec sleep 600", 128 + signal.SIGTERM),
     ("trap '' TERM; while :; do sleep 0.05; done", 128 + signal.SIGKILL),
     ("trap 'exit 0' TERM; while :; do sleep 0.05; done", 128 + signal.SIGTERM),
     ("sleep 0.3; exit 5", 5)],
    ids=["sigterm", "sigkill-after-term-wait", "exit-0-after-our-sigterm", "returns-in-settle"],
)  # fmt: skip
def test_interactive_watch_stops_with_settle_sigterm_then_sigkill(
    script: str, status: int, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    result = SubprocessRunner(ENV).interactive(
        ["sh", "-c", f"echo $$ > {pidfile}; {script}"],
        watch=stop_at(0.1, settle=0.5, term_wait=0.5), interval=0.1,
    )  # fmt: skip
    took = time.monotonic() - started
    assert result == status
    assert took < 0.1 + 0.5 + 0.5 + 1.5
    if status == 5:
        assert took < 0.6, "it returned on its own: no wait for the whole settle"
    assert not Path(f"/proc/{pidfile.read_text().strip()}").exists()


def test_interactive_watch_that_fails_stops_the_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    before = signal.getsignal(signal.SIGTERM)

    def watch(_watched: Watched) -> None:
        raise RuntimeError("watch failed")

    with pytest.raises(RuntimeError, match="watch failed"):
        SubprocessRunner(ENV).interactive(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 600"],
                                          watch=watch, interval=0.05)  # fmt: skip
    assert not Path(f"/proc/{pidfile.read_text().strip()}").exists()
    assert signal.getsignal(signal.SIGTERM) is before


def test_interactive_watch_keeps_the_signal_forwarding() -> None:
    """A SIGTERM to us reaches a watched command as it reaches an unwatched one."""
    import threading

    ticks: list[float] = []
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        status = SubprocessRunner(ENV).interactive(
            ["sh", "-c", "trap 'exit 0' TERM; sleep 30 & wait"],
            watch=lambda w: ticks.append(w.elapsed()), interval=0.05,
        )  # fmt: skip
    finally:
        timer.join()
    assert status == 128 + signal.SIGTERM
    assert ticks, "watched until it ended"


def test_recording_runner_simulates_a_watched_command() -> None:
    rec = RecordingRunner()
    rec.script("podman", "run", returncode=3, runs_for=3.5)
    seen: list[float] = []

    def watch(watched: Watched) -> None:
        seen.append(watched.elapsed())
        rec.run(["podman", "inspect", "x"])

    assert rec.interactive(["podman", "run", "img"], watch=watch) == 3
    assert seen == [1.0, 2.0, 3.0]
    assert rec.argvs == [["podman", "run", "img"], *[["podman", "inspect", "x"]] * 3]
    assert not rec.calls[0].stopped
    rec.calls.clear()
    assert rec.interactive(["podman", "run", "img"], watch=stop_at(2.0), interval=0.5) == (
        STOPPED_STATUS
    )
    assert rec.calls == [Call(("podman", "run", "img"), interactive=True, stopped=True)]
    assert rec.interactive(["true"], watch=stop_at(0.0)) == 0, "not scripted: ends at once"
