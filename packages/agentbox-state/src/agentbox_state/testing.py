"""Runner doubles for tests of code that takes a ``Runner``: one that records each call and
answers from a script, and a real one on which named tools are missing.

Capability gates for this repository's CI host (root, the test user, loop-device btrfs) are not
here: they live in the unpublished test harness (``tests/support``, ``agentbox_testing``)."""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentbox_state.runner import (
    STOP_SETTLE,
    STOP_TERM_WAIT,
    Completed,
    SubprocessRunner,
    Watch,
    command_failed,
)


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
