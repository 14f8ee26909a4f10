"""The pytest plugin (entry point ``pytest11``): the tier markers, and a check that they are true.

A test is marked by what it needs from the host. Unmarked tests form the pure tier (``nox -s
unit``): they run anywhere. The real-tool tiers select by these markers in their own sessions
(see ``noxfile.py``). ``check_marked`` is called by the harness's ``require_root``,
``require_test_user`` and ``btrfs_loop``: a test that reaches one of them without the marker
fails, instead of quietly turning the pure tier into a root-only one.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

MARKERS: dict[str, str] = {
    "root": "needs root (mounts, loop devices, rootful Podman, runuser to the test user)",
    "btrfs": "needs btrfs-progs (mkfs.btrfs, blkid) or a loop-mounted btrfs",
    "podman": "drives real Podman or Buildah",
    "libkrun": "loads a real libkrun (PyPI's smolmachines) or the helper on it",
    "kvm": "boots a guest: a /dev/kvm backed by hardware virtualization (not kvm-pvm)",
    "image": "needs the agentbox image, built once per run by `agentbox image build`",
}
_running: list[pytest.Item] = []  # the test being run (set up, called, torn down), if any


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--tier", choices=["pure", "real", "all"], default="all",
        help="pure: only tests without a tier marker; real: only tests with one (default: all)",
    )  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    for name, why in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {why}")


def needs(item: pytest.Item) -> list[str]:
    """The tier markers ``item`` carries (none: it is in the pure tier)."""
    return [name for name in MARKERS if item.get_closest_marker(name) is not None]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tier = config.getoption("tier")
    if tier == "all":
        return
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (keep if bool(needs(item)) == (tier == "real") else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


def check_marked(marker: str, need: str) -> None:
    """Fail the running test unless it carries ``marker`` (no-op outside a test run)."""
    if not _running or _running[-1].get_closest_marker(marker) is not None:
        return
    pytest.fail(f"{_running[-1].nodeid} {need} but is not marked @pytest.mark.{marker}: mark it, "
                "so that its tier's session runs it and the pure tier does not")  # fmt: skip
