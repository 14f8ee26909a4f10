"""The one way agentbox runs external commands.

Commands are argv lists, never shell strings, run with a minimal explicit environment. With an
``echo`` sink (``--debug``), each command is logged as ``+ <line you can paste>`` first. A failure
raises :class:`~agentbox_state.errors.CommandError` carrying the exit status and the tail of
stderr. ``interactive`` hands the terminal to the command and returns its exit status (128+N when
a signal ended it), as a shell would; its ``watch`` callback is called every ``interval`` seconds
while the command runs and may stop it (:class:`Watched`).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agentbox_state.errors import CommandError

# Variables a child may inherit from the user's environment; everything else is dropped.
PASSTHROUGH = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR",
    "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME",
    "DBUS_SESSION_BUS_ADDRESS",
    "CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "CONTAINER_HOST",
    "BUILDAH_ISOLATION", "STORAGE_DRIVER", "REGISTRY_AUTH_FILE",
    # Set by `buildah unshare` / `podman unshare`: without them, a buildah or podman run inside
    # that namespace believes it is real root and reaches for /run/containers/storage.
    "_CONTAINERS_USERNS_CONFIGURED", "_CONTAINERS_ROOTLESS_UID", "_CONTAINERS_ROOTLESS_GID",
    # Our own Python children (the ingest child, the libkrun helper) must import what this
    # process imported, also when it was installed on PYTHONPATH rather than in a venv.
    "PYTHONPATH",
})  # fmt: skip
# The terminal's own settings, passed on only to interactive commands.
TERMINAL = frozenset({"TERM", "COLORTERM", "LANG", "LC_ALL", "LC_CTYPE", "NO_COLOR"})
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

STDERR_TAIL_LINES = 20


@dataclass(frozen=True, slots=True)
class Completed:
    """The result of a finished command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""


# How ``Watched.stop`` ends a command: the time it gets to return on its own, then SIGTERM and
# the time it gets after that, then SIGKILL.
STOP_SETTLE = 3.0
STOP_TERM_WAIT = 3.0


class Watched(Protocol):
    """The running command of ``Runner.interactive``, as its ``watch`` callback sees it."""

    @property
    def pid(self) -> int: ...

    def elapsed(self) -> float:
        """Seconds since the command started."""
        ...

    def stop(self, *, settle: float = STOP_SETTLE, term_wait: float = STOP_TERM_WAIT) -> None:
        """Stop the command once the callback returns: it gets ``settle`` seconds to exit on
        its own, then SIGTERM, then ``term_wait`` seconds, then SIGKILL. ``interactive`` then
        returns how it ended (128+N when it exited 0 after a signal we sent)."""
        ...


Watch = Callable[[Watched], None]


class Runner(Protocol):
    """The seam every layer runs commands through (swap in ``RecordingRunner`` in tests)."""

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,  # noqa: A002 - mirrors subprocess.run
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        check: bool = True,
    ) -> Completed: ...

    def interactive(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        watch: Watch | None = None,
        interval: float = 1.0,
    ) -> int: ...

    def detach(
        self, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None
    ) -> int: ...


def command_line(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """A shell line that reproduces the command, with the variables we set in front."""
    prefix = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    return " ".join([*prefix, shlex.join(argv)])


def stderr_tail(stderr: str, lines: int = STDERR_TAIL_LINES) -> str:
    kept = [line for line in stderr.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def exit_status(returncode: int) -> int:
    """A shell-style exit status: a signal death (negative returncode) becomes 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def describe_status(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    if returncode == 127:
        return "failed with exit status 127 (a command it ran was not found)"
    return f"failed with exit status {returncode}"


# Failures whose remedy the tool prints itself, by a phrase of its stderr.
KNOWN_REMEDIES = (
    # Rootless Podman recorded a pause process or containers whose processes are gone (a crash,
    # an OOM kill, a session whose processes were all killed, /tmp kept over a reboot).
    ("podman system migrate",
     "Podman's rootless state names processes that are gone: run `podman system migrate` "
     "(it marks their containers stopped), then retry"),
)  # fmt: skip


def known_remedy(stderr: str) -> str | None:
    """The fix for a failure whose stderr names its own remedy (pure)."""
    return next((hint for phrase, hint in KNOWN_REMEDIES if phrase in stderr), None)


def command_failed(argv: Sequence[str], returncode: int, stderr: str) -> CommandError:
    """The error for a command that ran and failed (shared with the recording runner)."""
    tail = stderr_tail(stderr)
    message = f"`{shlex.join(argv)}` {describe_status(returncode)}"
    if tail:
        message += "\n" + "\n".join(f"  {line}" for line in tail.splitlines())
    return CommandError(message, argv=tuple(argv), returncode=returncode, stderr_tail=tail,
                        hint=known_remedy(stderr))  # fmt: skip


def _start_failed(argv: Sequence[str], err: OSError) -> CommandError:
    name = argv[0]
    if isinstance(err, FileNotFoundError):
        message = f"cannot run {name}: it is not installed or not on PATH"
        hint = f"install {name} (see the README's requirements) or add its directory to PATH"
    elif isinstance(err, PermissionError):
        message = f"cannot run {name}: permission denied"
        hint = f"check that {name} is executable by you"
    else:
        message = f"cannot run {name}: {err.strerror or err}"
        hint = None
    return CommandError(message, argv=tuple(argv), returncode=None, hint=hint)


SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def with_sbin(path: str) -> str:
    """``path`` with the sbin dirs it lacks appended: an ordinary user's PATH on Debian has none,
    yet mkfs.btrfs, blkid and losetup live there and work for them (pure)."""
    dirs = path.split(os.pathsep)
    return os.pathsep.join([*dirs, *(d for d in SBIN if d not in dirs)])


class SubprocessRunner:
    """Runs commands for real, with an environment built from ``environ``'s allowed variables."""

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self._environ = environ
        self._echo = echo

    def child_env(self, env: Mapping[str, str] | None, *, terminal: bool) -> dict[str, str]:
        allowed = PASSTHROUGH | TERMINAL if terminal else PASSTHROUGH
        out = {k: v for k, v in self._environ.items() if k in allowed}
        out["PATH"] = with_sbin(out.get("PATH") or DEFAULT_PATH)
        if not terminal:
            out["LANG"] = "C.UTF-8"  # parseable, untranslated output
        out.update(env or {})
        return out

    def _log(self, argv: Sequence[str], env: Mapping[str, str] | None) -> None:
        if self._echo is not None:
            self._echo(f"+ {command_line(argv, env)}")

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,  # noqa: A002
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        check: bool = True,
    ) -> Completed:
        self._log(argv, env)
        try:
            proc = subprocess.run(
                list(argv),
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                env=self.child_env(env, terminal=False),
                cwd=cwd,
                check=False,
            )
        except OSError as err:
            raise _start_failed(argv, err) from err
        if check and proc.returncode != 0:
            raise command_failed(argv, proc.returncode, proc.stderr)
        return Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)

    def detach(
        self, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None
    ) -> int:
        """Start ``argv`` in a session of its own, output appended to ``log``; its pid. It
        outlives us (used for work that must happen after we exit, like an idle timeout)."""
        self._log(argv, env)
        with open(log, "ab") as out:
            try:
                proc = subprocess.Popen(
                    list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    start_new_session=True, env=self.child_env(env, terminal=False),
                )  # fmt: skip
            except OSError as err:
                raise _start_failed(argv, err) from err
        return proc.pid

    def interactive(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        watch: Watch | None = None,
        interval: float = 1.0,
    ) -> int:
        """Run with the terminal attached; return its exit status (128+N for signal N).

        While it runs, Ctrl-C and Ctrl-\\ belong to the command (we ignore them), and SIGTERM or
        SIGHUP sent to us is passed on to it, so it can clean up and we report how it ended.
        ``watch``, if given, is called every ``interval`` seconds until the command exits, and
        may stop it (``Watched.stop``); if it raises, the command is stopped and the error
        passed on.
        """
        self._log(argv, env)
        try:
            proc = subprocess.Popen(list(argv), env=self.child_env(env, terminal=True), cwd=cwd)
        except OSError as err:
            raise _start_failed(argv, err) from err
        child = _Child(proc)
        saved = {
            signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
            signal.SIGQUIT: signal.signal(signal.SIGQUIT, signal.SIG_IGN),
            signal.SIGTERM: signal.signal(signal.SIGTERM, child.forward),
            signal.SIGHUP: signal.signal(signal.SIGHUP, child.forward),
        }
        try:
            returncode = child.wait_watched(watch, interval)
        finally:
            for signum, handler in saved.items():
                signal.signal(signum, handler)
        if returncode == 0 and child.signals:
            # Stopped by a signal we passed on or sent, yet "success" (podman run exits 0 when
            # it is terminated): report how it really ended, as a shell would.
            return 128 + child.signals[0]
        return exit_status(returncode)


class _Child:
    """An interactive command while it runs: what a watch callback sees of it (``Watched``),
    and the one copy of the stop sequence and of the signals sent to it."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._started = time.monotonic()
        self._stop: tuple[float, float] | None = None
        self.signals: list[int] = []  # forwarded to it, or sent by the stop sequence

    @property
    def pid(self) -> int:
        return self._proc.pid

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def stop(self, *, settle: float = STOP_SETTLE, term_wait: float = STOP_TERM_WAIT) -> None:
        self._stop = (settle, term_wait)

    def _send(self, signum: int) -> None:
        self.signals.append(signum)
        self._proc.send_signal(signum)

    def forward(self, signum: int, _frame: object) -> None:
        self._send(signum)

    def _wait(self, timeout: float) -> int | None:
        try:
            return self._proc.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return None

    def _stopped(self, settle: float, term_wait: float) -> int:
        returncode = self._wait(settle)
        if returncode is None:
            self._send(signal.SIGTERM)
            returncode = self._wait(term_wait)
        if returncode is None:
            self._send(signal.SIGKILL)
            returncode = self._proc.wait()
        return returncode

    def wait_watched(self, watch: Watch | None, interval: float) -> int:
        if watch is None:
            return self._proc.wait()
        while (returncode := self._wait(interval)) is None:
            try:
                watch(self)
            except BaseException:
                self._stopped(STOP_SETTLE, STOP_TERM_WAIT)
                raise
            if self._stop is not None:
                return self._stopped(*self._stop)
        return returncode
