import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agentbox_state.errors import AgentboxError, LockHeldError
from agentbox_state.lock import FileLock
from agentbox_state.recordfile import RecordFileError

HOLDER = """
import sys, time
from pathlib import Path
from agentbox_state.lock import FileLock
from agentbox_state.recordfile import RecordFileError
lock = FileLock(Path(sys.argv[1]), what="test")
lock.acquire()
print("held", flush=True)
sys.stdin.readline()
lock.release()
"""


def test_acquire_release_and_record(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "ws.lock"
    with FileLock(path, what="workspace /p") as lock:
        record = json.loads(path.read_text())
        assert list(record) == ["pid", "since"]
        assert record["pid"] == os.getpid()
        assert abs(record["since"] - time.time()) < 60
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not lock.held
    assert path.read_text() == ""  # the record goes with the lock; the file stays
    FileLock(path, what="again").acquire()


def test_second_holder_in_this_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ws.lock"
    with FileLock(path, what="workspace /p"), pytest.raises(LockHeldError) as caught:
        FileLock(path, what="workspace /p").acquire()
    err = caught.value
    assert err.pid == os.getpid()
    assert err.message.startswith(
        f"workspace /p is in use: its lock {path} is held by pid {os.getpid()} since "
    )
    assert err.hint == (
        f"wait for that run to finish and retry, or stop it (kill {os.getpid()}) if it is stuck"
    )


def test_reacquire_same_object_is_a_bug(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "x.lock", what="x")
    lock.acquire()
    with pytest.raises(AgentboxError, match="already held by this process"):
        lock.acquire()
    lock.release()
    lock.release()  # releasing twice is harmless


@contextmanager
def held_elsewhere(path: Path) -> Iterator[subprocess.Popen[str]]:
    """A real second process holding the lock on ``path`` until we write a line to it."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, os.fspath(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "held\n"
            yield holder
        finally:
            holder.kill()


def let_go(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.flush()


def test_holder_in_another_process_is_named_and_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "ws.lock"
    with held_elsewhere(path) as holder:
        with pytest.raises(LockHeldError) as caught:
            FileLock(path, what="disk d.raw").acquire(wait=0.2)
        assert caught.value.pid == holder.pid
        assert f"held by pid {holder.pid} since " in caught.value.message
        assert caught.value.message.endswith("(waited 0.2 s)")

        told: list[str] = []
        releaser = threading.Timer(0.3, let_go, args=(holder,))
        releaser.start()
        waiter = FileLock(path, what="disk d.raw")
        start = time.monotonic()
        waiter.acquire(wait=30, on_wait=told.append)
        releaser.join()
        assert waiter.held
        assert time.monotonic() - start >= 0.25
        assert len(told) == 1
        assert told[0].startswith(f"waiting for disk d.raw: held by pid {holder.pid} since ")
        waiter.release()


def test_killed_holder_releases(tmp_path: Path) -> None:
    path = tmp_path / "ws.lock"
    with held_elsewhere(path) as holder:
        holder.kill()
        holder.wait()
        with FileLock(path, what="x") as lock:
            assert lock.held


def test_unrecorded_holder(tmp_path: Path) -> None:
    import fcntl

    path = tmp_path / "raw.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(LockHeldError) as caught:
            FileLock(path, what="x").acquire()
        assert "held by another process (a shared holder, or one that has not recorded its pid " \
            "yet)" in caught.value.message  # fmt: skip
        assert caught.value.pid is None
        assert caught.value.hint == "wait for that run to finish and retry"
    finally:
        os.close(fd)


def test_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AgentboxError) as caught:
        FileLock(blocker / "sub" / "x.lock", what="x").acquire()
    assert caught.value.message.startswith(f"cannot open the lock file {blocker}/sub/x.lock")


def test_shared_holders_keep_an_exclusive_taker_out(tmp_path: Path) -> None:
    path = tmp_path / "users.lock"
    first, second = FileLock(path, what="users"), FileLock(path, what="users")
    first.acquire(shared=True)
    second.acquire(shared=True)
    with pytest.raises(LockHeldError):
        FileLock(path, what="users").acquire()
    first.release()
    with pytest.raises(LockHeldError):
        FileLock(path, what="users").acquire()
    second.release()
    with FileLock(path, what="users") as lock:
        assert lock.held
        with pytest.raises(LockHeldError):
            FileLock(path, what="users").acquire(shared=True)


def test_without_create_nothing_is_made_and_a_removed_file_is_gone(tmp_path: Path) -> None:
    from agentbox_state.lock import LockGoneError

    missing = FileLock(tmp_path / "task" / ".lock", what="task t")
    with pytest.raises(LockGoneError) as caught:
        missing.acquire(create=False)
    assert caught.value.message == f"task t is gone: its lock {tmp_path}/task/.lock does not exist"
    assert not (tmp_path / "task").exists()  # no dir, no file made
    there = FileLock(tmp_path / "x.lock", what="x")
    there.path.touch()
    there.acquire(create=False)
    there.release()


def test_a_shared_holder_is_described_as_such(tmp_path: Path) -> None:
    shared = FileLock(tmp_path / "s.lock", what="task s")
    shared.acquire(shared=True)
    try:
        with pytest.raises(LockHeldError) as caught:
            FileLock(tmp_path / "s.lock", what="task s").acquire()
        assert "a shared holder, or one that has not recorded its pid yet" in caught.value.message
    finally:
        shared.release()


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (b"pid 1", "is not JSON (Expecting value at line 1 column 1)"),
        (b"pid=x\nsince=2\n", "has 'pid' as 'x', not an integer"),
        (b"[1, 2]", "is an array, not a JSON object"),
        (b'{"pid": "1", "since": 2}', "has 'pid' as a string, not an integer"),
        (b'{"pid": 1}', "lacks 'since'"),
        (b'{"pid": 1, "since": 2, "host": "x"}', "has the unknown key 'host' (known: pid, since)"),
    ],
)
def test_a_holder_record_that_is_not_one_is_named(
    tmp_path: Path, record: bytes, reason: str
) -> None:
    path = tmp_path / "ws.lock"
    with FileLock(path, what="workspace /p"):
        os.truncate(path, 0)  # stand in for a writer of another format
        with open(path, "r+b") as f:
            f.write(record)
        with pytest.raises(RecordFileError) as caught:
            FileLock(path, what="workspace /p").acquire()
    assert caught.value.message == f"the lock holder record {path} {reason}"
    assert caught.value.path == str(path)
    assert caught.value.hint == (
        "only agentbox writes it; remove the file once no agentbox or loftd runs"
    )


def test_a_holder_of_the_previous_version_is_still_named(tmp_path: Path) -> None:
    """Its key=value record (before records were JSON): the wait message names it."""
    path = tmp_path / "ws.lock"
    with FileLock(path, what="workspace /p"):
        os.truncate(path, 0)
        with open(path, "r+b") as f:
            f.write(f"pid={os.getpid()}\nsince=2\n".encode())
        with pytest.raises(LockHeldError) as caught:
            FileLock(path, what="workspace /p").acquire()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(2))
    assert f"is held by pid {os.getpid()} since {stamp}" in caught.value.message


def test_probe_says_held_free_or_stale_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "d.raw.lease"
    lock = FileLock(path, what="disk d.raw")
    assert lock.probe() is None  # no lock file: nothing is made
    assert not path.exists()
    with held_elsewhere(path) as holder:
        probe = lock.probe()
        assert probe is not None
        assert (probe.held, probe.pid) == (True, holder.pid)
        assert probe.holder.startswith(f"pid {holder.pid} since ")
        record = path.read_bytes()
        holder.kill()  # killed while holding: its record stays, the kernel frees the lock
        holder.wait()
    assert lock.probe() == (False, "", holder.pid)  # stale: the pid of a holder that is gone
    assert path.read_bytes() == record  # a probe writes nothing
    with FileLock(path, what="x"):
        pass  # a holder that lets go truncates its record
    assert lock.probe() == (False, "", None)


def test_probe_counts_a_shared_holder(tmp_path: Path) -> None:
    path = tmp_path / ".task.lock"
    with FileLock(path, what="task") as _:
        pass
    shared = FileLock(path, what="task")
    shared.acquire(shared=True)
    try:
        probe = FileLock(path, what="task").probe()
        assert probe is not None
        assert probe.held
        assert probe.pid is None
    finally:
        shared.release()
