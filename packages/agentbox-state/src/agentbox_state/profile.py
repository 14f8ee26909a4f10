"""A profiler of named, nested phases.

Phases are timed with a monotonic clock and kept in start order with their depth; a phase that
raises is still recorded, marked failed. The report is text for stderr; by the original tool's
rule a CLI prints it only when both ``--profile`` and ``--debug`` are set (``should_report``).
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType


def should_report(*, profile: bool, debug: bool) -> bool:
    return profile and debug


class PhaseRecord:
    """One timed phase (mutable while it runs)."""

    __slots__ = ("depth", "elapsed_ns", "failed", "name")

    def __init__(self, name: str, depth: int) -> None:
        self.name = name
        self.depth = depth
        self.elapsed_ns = 0
        self.failed = False


class _Phase:
    __slots__ = ("_name", "_profiler", "_record", "_start")

    def __init__(self, profiler: Profiler, name: str) -> None:
        self._profiler = profiler
        self._name = name
        self._record: PhaseRecord | None = None
        self._start = 0

    def __enter__(self) -> None:
        p = self._profiler
        if p.enabled:
            self._record = PhaseRecord(self._name, p._depth)
            p.records.append(self._record)
            p._depth += 1
            self._start = p._clock()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._record is not None:
            p = self._profiler
            self._record.elapsed_ns = p._clock() - self._start
            self._record.failed = exc_type is not None
            p._depth -= 1


class Profiler:
    """Collects phase timings when ``enabled``; otherwise every call is a cheap no-op."""

    def __init__(
        self,
        title: str,
        *,
        enabled: bool,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.title = title
        self.enabled = enabled
        self.records: list[PhaseRecord] = []
        self.metadata: dict[str, str] = {}
        self._clock = clock
        self._depth = 0

    def phase(self, name: str) -> _Phase:
        """``with profiler.phase("image_cache_ensure"): ...``"""
        return _Phase(self, name)

    def meta(self, key: str, value: str) -> None:
        if self.enabled:
            self.metadata[key] = value

    def report(self) -> str:
        """The report: title, metadata, one indented line per phase, then the total."""
        lines = [self.title]
        lines += [f"  {k}: {v}" for k, v in self.metadata.items()]
        for r in self.records:
            mark = " (failed)" if r.failed else ""
            lines.append(f"  {'  ' * r.depth}{r.name}: {r.elapsed_ns / 1e6:.3f}ms{mark}")
        total = sum(r.elapsed_ns for r in self.records if r.depth == 0)
        lines.append(f"  total: {total / 1e6:.3f}ms")
        return "\n".join(lines)
