"""Test support shared by every package's tests: a recording runner and capability gates."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agentbox_state.parse import env_flag
from agentbox_state.runner import (
    STOP_SETTLE,
    STOP_TERM_WAIT,
    Completed,
    SubprocessRunner,
    Watch,
    command_failed,
)

ENFORCE_VAR = "AGENTBOX_CI_ENFORCE"


@dataclass(frozen=True, slots=True)
class Call:
    """One command a ``RecordingRunner`` was asked to run."""

    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None
    input: str | None = None
    cwd: Path | None = None
    interactive: bool = False
    stopped: bool = False  # an interactive command its watch callback stopped


@dataclass
class ScriptedWatch:
    """The ``Watched`` a ``RecordingRunner`` hands to a watch callback: ``elapsed`` is the
    simulated time, and ``stop`` only records what it was asked."""

    pid: int = 0
    seconds: float = 0.0
    stop_asked: tuple[float, float] | None = None  # (settle, term_wait)

    def elapsed(self) -> float:
        return self.seconds

    def stop(self, *, settle: float = STOP_SETTLE, term_wait: float = STOP_TERM_WAIT) -> None:
        self.stop_asked = (settle, term_wait)


STOPPED_STATUS = 128 + signal.SIGTERM  # what a RecordingRunner's stopped command returns


@dataclass
class RecordingRunner:
    """A ``Runner`` that records each call and answers from a script instead of running it.

    ``results`` maps an argv prefix to the ``Completed`` to answer; the longest matching prefix
    wins and anything unmatched succeeds with empty output. A non-zero scripted result raises
    exactly the error the real runner raises when ``check`` is true. An interactive command
    "runs" for its scripted ``runs_for`` seconds of simulated time: its watch callback is called
    at every ``interval`` before that, and if it stops the command, ``STOPPED_STATUS`` is the
    answer (as if SIGTERM ended it).
    """

    results: dict[tuple[str, ...], Completed] = field(default_factory=dict)
    runs_for: dict[tuple[str, ...], float] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def script(
        self, *prefix: str, returncode: int = 0, stdout: str = "", stderr: str = "",
        runs_for: float = 0.0,
    ) -> None:  # fmt: skip
        self.results[prefix] = Completed(prefix, returncode, stdout, stderr)
        self.runs_for[prefix] = runs_for

    def _best(self, argv: tuple[str, ...]) -> tuple[str, ...] | None:
        matching = [prefix for prefix in self.results if argv[: len(prefix)] == prefix]
        return max(matching, key=len, default=None)

    def _answer(self, argv: tuple[str, ...]) -> Completed:
        best = self._best(argv)
        if best is None:
            return Completed(argv, 0)
        result = self.results[best]
        return Completed(argv, result.returncode, result.stdout, result.stderr)

    @property
    def argvs(self) -> list[list[str]]:
        return [list(c.argv) for c in self.calls]

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,  # noqa: A002
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        check: bool = True,
    ) -> Completed:
        call = Call(tuple(argv), dict(env) if env else None, input, cwd)
        self.calls.append(call)
        result = self._answer(call.argv)
        if check and result.returncode != 0:
            raise command_failed(argv, result.returncode, result.stderr)
        return result

    def interactive(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        watch: Watch | None = None,
        interval: float = 1.0,
    ) -> int:
        call = Call(tuple(argv), dict(env) if env else None, None, cwd, True)
        index = len(self.calls)
        self.calls.append(call)  # before what the watch callback runs
        best = self._best(call.argv)
        runs_for = self.runs_for.get(best, 0.0) if best is not None else 0.0
        watched = ScriptedWatch()
        tick = 1
        while watch is not None and tick * interval < runs_for:
            watched.seconds = tick * interval
            watch(watched)
            if watched.stop_asked is not None:
                self.calls[index] = dataclasses.replace(call, stopped=True)
                return STOPPED_STATUS
            tick += 1
        return self._answer(call.argv).returncode

    def detach(
        self, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None
    ) -> int:
        self.calls.append(Call(tuple(argv), dict(env) if env else None))
        return 0


class HidingRunner(SubprocessRunner):
    """A real runner on which the named tools are missing from ``run`` (not from
    ``interactive`` or ``detach``): they are started by a path that does not exist, so the
    genuine "not installed" failure is what the caller sees (PATH cannot hide them: the runner
    always adds the sbin dirs)."""

    def __init__(self, environ: Mapping[str, str], hide: Sequence[str]) -> None:
        super().__init__(environ)
        self.hide = frozenset(hide)

    def _hidden(self, argv: Sequence[str]) -> list[str]:
        return [f"/nonexistent/{a}" if i == 0 and a in self.hide else a for i, a in enumerate(argv)]

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,  # noqa: A002
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        check: bool = True,
    ) -> Completed:
        return super().run(self._hidden(argv), input=input, env=env, cwd=cwd, check=check)


def enforced(environ: Mapping[str, str] | None = None) -> bool:
    """True when CI asks that a missing capability fail the run instead of skipping."""
    return env_flag(os.environ if environ is None else environ, ENFORCE_VAR)


def require(available: bool, reason: str) -> None:
    """Skip the calling test when a capability is missing, or fail under ``AGENTBOX_CI_ENFORCE``.

    ``reason`` says what is missing and how to get it, so the skip explains itself.
    """
    if available:
        return
    import pytest

    if enforced():
        pytest.fail(f"{ENFORCE_VAR}=1 and a required capability is missing: {reason}")
    pytest.skip(reason)


TEST_USER_VAR = "AGENTBOX_TEST_USER"
DEFAULT_TEST_USER = "agentbox-test"


def test_user() -> str:
    """The ordinary user rootless tests run as (scripts/test creates it when run as root)."""
    return os.environ.get(TEST_USER_VAR, DEFAULT_TEST_USER)


def require_root(why: str) -> None:
    require(os.geteuid() == 0, f"needs root: {why}")


def require_test_user() -> str:
    """Skip (or fail under enforcement) unless we are root and the test user exists."""
    import pwd
    import shutil

    user = test_user()
    try:
        pwd.getpwnam(user)
        exists = True
    except KeyError:
        exists = False
    require(
        os.geteuid() == 0 and exists and shutil.which("runuser") is not None,
        f"rootless tests need root, runuser and the user {user} (scripts/test creates it)",
    )
    return user


def run_as_user(
    code: str,
    *,
    packages: Sequence[str],
    cwd: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as the ordinary test user with copies of ``packages`` importable.

    The packages are copied from where this interpreter imports them into a world-readable
    temporary dir, so the test does not depend on the checkout or venv being readable by the
    user; the system's python3 runs the code. Returns the finished process (not checked).
    """
    import importlib
    import pwd
    import shutil
    import tempfile

    user = require_test_user()
    home = pwd.getpwnam(user).pw_dir
    with tempfile.TemporaryDirectory(prefix="agentbox-user-code-") as tmp:
        os.chmod(tmp, 0o755)
        for name in packages:
            module = importlib.import_module(name)
            assert module.__file__ is not None
            shutil.copytree(
                Path(module.__file__).parent,
                Path(tmp) / name,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        for root, dirs, files in os.walk(tmp):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        child_env = {
            "HOME": home, "USER": user, "LOGNAME": user, "PYTHONPATH": tmp,
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8", **(env or {}),
        }  # fmt: skip
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
        return subprocess.run(
            ["runuser", "-u", user, "--", "env", "-i",
             *(f"{k}={v}" for k, v in child_env.items()), python, "-c", code],
            cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip


@contextmanager
def btrfs_loop(
    image: Path, mountpoint: Path, *, size: str = "4G", options: str = "user_subvol_rm_allowed"
) -> Iterator[Path]:
    """A real btrfs filesystem: a sparse file, mkfs.btrfs, loop-mounted (root only)."""
    require_root("mounting a loop-device btrfs")
    import shutil

    for tool in ("mkfs.btrfs", "mount", "umount"):
        require(shutil.which(tool) is not None, f"{tool} is missing (apt-get install btrfs-progs)")
    subprocess.run(["truncate", "-s", size, os.fspath(image)], check=True)
    subprocess.run(["mkfs.btrfs", "--quiet", os.fspath(image)], check=True, capture_output=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", f"loop,{options}", os.fspath(image), os.fspath(mountpoint)],
                   check=True)  # fmt: skip
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", os.fspath(mountpoint)], check=False)
        image.unlink(missing_ok=True)
