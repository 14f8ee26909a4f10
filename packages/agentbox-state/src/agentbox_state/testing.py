"""Test support shared by every package's tests: a recording runner and capability gates."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentbox_state.parse import env_flag
from agentbox_state.runner import Completed, command_failed

ENFORCE_VAR = "AGENTBOX_CI_ENFORCE"


@dataclass(frozen=True, slots=True)
class Call:
    """One command a ``RecordingRunner`` was asked to run."""

    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None
    input: str | None = None
    cwd: Path | None = None
    interactive: bool = False


@dataclass
class RecordingRunner:
    """A ``Runner`` that records each call and answers from a script instead of running it.

    ``results`` maps an argv prefix to the ``Completed`` to answer; the longest matching prefix
    wins and anything unmatched succeeds with empty output. A non-zero scripted result raises
    exactly the error the real runner raises when ``check`` is true.
    """

    results: dict[tuple[str, ...], Completed] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def script(self, *prefix: str, returncode: int = 0, stdout: str = "", stderr: str = "") -> None:
        self.results[prefix] = Completed(prefix, returncode, stdout, stderr)

    def _answer(self, argv: tuple[str, ...]) -> Completed:
        best: Completed | None = None
        best_len = -1
        for prefix, result in self.results.items():
            if argv[: len(prefix)] == prefix and len(prefix) > best_len:
                best, best_len = result, len(prefix)
        if best is None:
            return Completed(argv, 0)
        return Completed(argv, best.returncode, best.stdout, best.stderr)

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
    ) -> int:
        self.calls.append(Call(tuple(argv), dict(env) if env else None, None, cwd, True))
        return self._answer(tuple(argv)).returncode


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
