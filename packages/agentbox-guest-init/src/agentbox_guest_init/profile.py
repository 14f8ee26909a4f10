"""Named step timings, reported on stderr only with both profile and debug flags on."""

from __future__ import annotations

import sys
import time


class Profile:
    def __init__(self, section: str, *, enabled: bool, prog: str = "agentbox-guest-init") -> None:
        self.section = section
        self.enabled = enabled
        self.prog = prog
        self.rows: list[tuple[str, int]] = []
        self.start = time.perf_counter_ns()
        self._label = ""
        self._t0 = 0

    def begin(self, label: str) -> None:
        if self.enabled:
            self._label, self._t0 = label, time.perf_counter_ns()

    def end(self) -> None:
        if self.enabled and self._label:
            self.rows.append((self._label, time.perf_counter_ns() - self._t0))
            self._label = ""

    def step(self, label: str) -> None:
        """End the running step (if any) and start ``label``."""
        self.end()
        self.begin(label)

    def report(self) -> str:
        lines = [f"{self.prog} profile: {self.section}"]
        lines += [f"  {label}: {ns / 1e6:.3f}ms" for label, ns in self.rows]
        lines.append(f"  total: {(time.perf_counter_ns() - self.start) / 1e6:.3f}ms")
        return "\n".join(lines)

    def emit(self) -> None:
        self.end()
        if self.enabled:
            print(self.report(), file=sys.stderr, flush=True)
