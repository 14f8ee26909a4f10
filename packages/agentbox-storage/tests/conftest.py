"""Real filesystems for the storage tests: a loop-mounted btrfs, as the issue demands."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agentbox_testing import btrfs_loop

MakeRootfs = Callable[..., Path]


@contextmanager
def _open_dir(prefix: str) -> Iterator[Path]:
    """A temporary dir the test user can enter (pytest's tmp_path sits in a 0700 dir)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        os.chmod(tmp, 0o755)
        yield Path(tmp)


@pytest.fixture(scope="session")
def btrfs() -> Iterator[Path]:
    """A btrfs filesystem mounted with user_subvol_rm_allowed (root only)."""
    with _open_dir("agentbox-btrfs-") as base, btrfs_loop(base / "fs.img", base / "mnt") as mnt:
        yield mnt


@pytest.fixture(scope="session")
def btrfs_strict() -> Iterator[Path]:
    """A btrfs filesystem mounted without user_subvol_rm_allowed (root only)."""
    with (
        _open_dir("agentbox-btrfs-") as base,
        btrfs_loop(base / "fs.img", base / "mnt", size="1G", options="rw") as mnt,
    ):
        yield mnt


@pytest.fixture(scope="session")
def make_rootfs() -> MakeRootfs:
    return _make_rootfs


def _make_rootfs(path: Path, *, subvolume: bool, files: int = 20) -> Path:
    """A small image-like rootfs: dirs, files of several owners, a read-only dir, a symlink."""
    if subvolume:
        subprocess.run(["btrfs", "subvolume", "create", str(path)], check=True,
                       capture_output=True)  # fmt: skip
    else:
        path.mkdir(parents=True)
    (path / "usr" / "bin").mkdir(parents=True)
    (path / "etc").mkdir()
    (path / "bin").symlink_to("usr/bin")
    guest = path / "usr" / "bin" / "agentbox-guest-init"
    guest.write_text("#!/bin/sh\necho guest\n")
    guest.chmod(0o755)
    (path / "etc" / "os-release").write_text("ID=test\n")
    for i in range(files):
        (path / "usr" / f"data{i}").write_bytes(os.urandom(4096))
    if os.geteuid() == 0:
        os.chown(path / "etc" / "os-release", 1000, 1000)
    ro = path / "ro"
    ro.mkdir()
    (ro / "inside").write_text("x")
    ro.chmod(0o555)
    return path
