from collections.abc import Callable

import pytest

from agentbox_state.profile import Profiler, should_report


def fake_clock(step_ns: int = 1_000_000) -> Callable[[], int]:
    now = [0]

    def clock() -> int:
        now[0] += step_ns
        return now[0]

    return clock


def test_nested_phases_and_failures_are_reported() -> None:
    prof = Profiler("agentbox host profile", enabled=True, clock=fake_clock())
    prof.meta("mode", "container")
    with prof.phase("image"), prof.phase("inspect"):
        pass
    with pytest.raises(RuntimeError), prof.phase("launch"):
        raise RuntimeError("boom")
    assert prof.report() == "\n".join(
        [
            "agentbox host profile",
            "  mode: container",
            "  image: 3.000ms",
            "    inspect: 1.000ms",
            "  launch: 1.000ms (failed)",
            "  total: 4.000ms",
        ]
    )


def test_disabled_profiler_records_nothing() -> None:
    prof = Profiler("x", enabled=False)
    with prof.phase("a"):
        prof.meta("k", "v")
    assert prof.records == []
    assert prof.metadata == {}


@pytest.mark.parametrize(
    ("profile", "debug", "expected"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_report_needs_profile_and_debug(profile: bool, debug: bool, expected: bool) -> None:
    assert should_report(profile=profile, debug=debug) is expected
