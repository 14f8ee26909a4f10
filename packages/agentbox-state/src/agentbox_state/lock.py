"""Advisory file locks that say who holds them.

``FileLock`` wraps ``flock(2)``: the kernel releases it when the holder exits, however it exits,
so a crashed run never leaves a stale lock. The holder writes its pid and start time into the
file (a JSON record: ``{"pid": N, "since": T}``, see ``agentbox_state.recordfile``) so that a
second run can say "held by pid N since T" instead of hanging or guessing.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from typing import NamedTuple

from agentbox_state import recordfile
from agentbox_state.errors import AgentboxError, LockHeldError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

POLL_SECONDS = 0.05
HOLDER = {"pid": int, "since": float}  # the holder record's keys, both required


class LockGoneError(AgentboxError):
    """The lock file (and what it guards) no longer exists."""


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _describe_holder(path: Path) -> tuple[int | None, str]:
    """(pid, "pid N since T") from a lock file's record; a record that is there but not one is
    a ``RecordFileError`` naming the file."""
    try:
        data = path.read_bytes()
    except OSError:
        data = b""
    if not data.strip():
        # shared holders record nothing; an exclusive one may be just starting
        return None, "another process (a shared holder, or one that has not recorded its pid yet)"
    record = recordfile.decode(
        data, path=path, what="lock holder record", fields=HOLDER, required=HOLDER,
        hint="only agentbox writes it; remove the file once no agentbox or loftd runs",
    )  # fmt: skip
    pid, since = int(record["pid"]), float(record["since"])
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    return pid, f"pid {pid} since {stamp}"


class LockProbe(NamedTuple):
    """What ``FileLock.probe`` found: ``held`` (by ``holder``, "pid N since T", and ``pid`` when
    recorded), or free with ``pid`` the one a killed exclusive holder left in the file (a stale
    record: a holder that let go truncates it)."""

    held: bool
    holder: str
    pid: int | None


class FileLock:
    """An exclusive lock on ``path`` (created 0600 with its parent dirs when missing).

    ``what`` names the thing protected, for messages ("workspace /x", "disk /y.raw").
    """

    def __init__(self, path: str | os.PathLike[str], *, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None
        self._shared = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(
        self,
        *,
        wait: float = 0.0,
        on_wait: Callable[[str], None] | None = None,
        shared: bool = False,
        create: bool = True,
    ) -> None:
        """Take the lock; if it is held, retry for up to ``wait`` seconds, then raise.

        ``on_wait`` is told once, with the holder's description, when we start waiting. A
        ``shared`` lock may have many holders at once (and records none); it keeps an exclusive
        taker out until the last one lets go. Without ``create`` the lock file must exist
        already (nothing is made), and one removed or replaced meanwhile is ``LockGoneError``.
        """
        if self._fd is not None:
            raise AgentboxError(f"the lock on {self.what} is already held by this process")
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
            fd = os.open(self.path, flags, 0o600)
        except OSError as err:
            if not create and isinstance(err, FileNotFoundError):
                raise LockGoneError(
                    f"{self.what} is gone: its lock {self.path} does not exist"
                ) from err
            raise AgentboxError(
                f"cannot open the lock file {self.path} for {self.what}: {err.strerror}",
                hint="check that the state directory is writable by you",
            ) from err
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise AgentboxError(
                        f"cannot lock {self.path} for {self.what}: {err.strerror}"
                    ) from err
            try:
                pid, holder = _describe_holder(self.path)
            except AgentboxError:
                os.close(fd)
                raise
            if time.monotonic() >= deadline:
                os.close(fd)
                waited = f" (waited {wait:g} s)" if wait > 0 else ""
                raise LockHeldError(
                    f"{self.what} is in use: its lock {self.path} is held by {holder}{waited}",
                    hint="wait for that run to finish and retry"
                    + (f", or stop it (kill {pid}) if it is stuck" if pid else ""),
                    pid=pid,
                )
            if on_wait is not None and not told:
                on_wait(f"waiting for {self.what}: held by {holder}")
                told = True
            time.sleep(POLL_SECONDS)
        if not create and not _same_file(fd, self.path):
            os.close(fd)
            raise LockGoneError(f"{self.what} is gone: its lock {self.path} was removed")
        if not shared:
            record = recordfile.encode({"pid": os.getpid(), "since": round(time.time(), 3)})
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
        self._fd = fd
        self._shared = shared

    def probe(self) -> LockProbe | None:
        """Whether the lock is held now, without taking it for long and without writing or
        making anything (None: there is no lock file). A shared holder counts as a holder."""
        try:
            pid, holder = _describe_holder(self.path)
        except AgentboxError:
            pid, holder = None, f"a process that left an unreadable record in {self.path}"
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise AgentboxError(
                f"cannot open the lock file {self.path} for {self.what}: {err.strerror}"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise AgentboxError(
                    f"cannot lock {self.path} for {self.what}: {err.strerror}"
                ) from err
            return LockProbe(held=True, holder=holder, pid=pid)
        finally:
            os.close(fd)  # closing releases the instant's lock, if it was taken
        return LockProbe(held=False, holder="", pid=pid)

    def release(self) -> None:
        """Drop the lock; the file stays (removing it would race with a waiting process)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if not self._shared:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
