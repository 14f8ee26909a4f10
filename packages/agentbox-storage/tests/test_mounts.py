"""The mount table and dead FUSE mounts (pure; the real dead mounts are in test_taskroot)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from agentbox_storage.mounts import DEAD_FUSE_ERRNOS, is_dead_fuse, is_mounted


@pytest.mark.parametrize(
    "code", [errno.ENOTCONN, errno.ECONNABORTED], ids=["ENOTCONN", "ECONNABORTED"]
)
def test_both_errnos_of_a_dead_fuse_mount_mean_dead(code: int) -> None:
    assert code in DEAD_FUSE_ERRNOS
    assert is_dead_fuse(OSError(code, os.strerror(code), "/m"))


@pytest.mark.parametrize(
    "err",
    [OSError(errno.ENOENT, "gone", "/m"), OSError(errno.EACCES, "no", "/m"), OSError("no errno"),
     ValueError("not an OSError")],
    ids=["ENOENT", "EACCES", "no-errno", "not-oserror"],
)  # fmt: skip
def test_other_errors_are_not_a_dead_mount(err: BaseException) -> None:
    assert not is_dead_fuse(err)


def test_is_mounted_resolves_symlinks_on_the_way(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "merged").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    table = tmp_path / "mountinfo"
    table.write_text(f"40 27 0:40 / {real}/merged rw - fuse.fuse-overlayfs fuse-overlayfs rw\n")
    assert is_mounted(tmp_path / "link" / "merged", mountinfo_file=str(table))
    assert is_mounted(real / "merged", mountinfo_file=str(table))
    assert not is_mounted(real, mountinfo_file=str(table))
