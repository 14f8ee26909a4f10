"""Pure argv builders for every storage command. No lookups, no I/O: tools are named, paths are
given, and a user-namespace wrapper (``buildah unshare``) is passed in as ``prefix`` when the
command must run inside one."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

Prefix = Sequence[str]


def mkfs_btrfs(path: Path, label: str) -> list[str]:
    # No -f: the file is new and empty, and mkfs must never overwrite a filesystem it finds.
    return ["mkfs.btrfs", "--quiet", "--label", label, os.fspath(path)]


def blkid_value(path: Path, tag: str) -> list[str]:
    """``blkid`` printing one tag (``TYPE``, ``LABEL``) of a device or image file; exit 2 when
    it finds no filesystem."""
    return ["blkid", "--probe", "--output", "value", "--match-tag", tag, os.fspath(path)]


def losetup_attach(path: Path) -> list[str]:
    return ["losetup", "--find", "--show", os.fspath(path)]


def losetup_refresh(device: str) -> list[str]:
    """Make an attached loop device see its backing file's new size."""
    return ["losetup", "--set-capacity", device]


def losetup_detach(device: str) -> list[str]:
    return ["losetup", "--detach", device]


def mount(source: str, target: Path, options: str | None = None) -> list[str]:
    opts = ["-o", options] if options else []
    return ["mount", *opts, source, os.fspath(target)]


def umount(target: Path) -> list[str]:
    return ["umount", os.fspath(target)]


def btrfs_resize_max(mountpoint: Path) -> list[str]:
    return ["btrfs", "filesystem", "resize", "max", os.fspath(mountpoint)]


def subvolume_create(path: Path, prefix: Prefix = ()) -> list[str]:
    return [*prefix, "btrfs", "subvolume", "create", os.fspath(path)]


def subvolume_snapshot(source: Path, dest: Path, prefix: Prefix = ()) -> list[str]:
    return [*prefix, "btrfs", "subvolume", "snapshot", os.fspath(source), os.fspath(dest)]


def subvolume_delete(path: Path, prefix: Prefix = ()) -> list[str]:
    return [*prefix, "btrfs", "subvolume", "delete", os.fspath(path)]


def stat_fstype(path: Path) -> list[str]:
    return ["stat", "--file-system", "--format", "%T", os.fspath(path)]


def findmnt_options(path: Path) -> list[str]:
    return ["findmnt", "--noheadings", "--target", os.fspath(path),
            "--output", "TARGET,SOURCE,FSTYPE,OPTIONS"]  # fmt: skip


def fuse_overlayfs(lower: Path, upper: Path, work: Path, merged: Path) -> list[str]:
    options = f"lowerdir={os.fspath(lower)},upperdir={os.fspath(upper)},workdir={os.fspath(work)}"
    return ["fuse-overlayfs", "-o", options, os.fspath(merged)]


def fuse_unmounts(merged: Path) -> list[list[str]]:
    """The ways to unmount a FUSE mount, in the order to try them; the lazy forms last, for a
    mount still busy or whose daemon died."""
    target = os.fspath(merged)
    return [
        ["fusermount3", "-u", target], ["fusermount", "-u", target], ["umount", target],
        ["fusermount3", "-u", "-z", target], ["umount", "-l", target],
    ]  # fmt: skip


def copy_tree(source: Path, dest: Path, *, reflink: str, prefix: Prefix = ()) -> list[str]:
    """``cp -a`` of ``source``'s contents into ``dest``; ``reflink`` is ``always`` or ``auto``."""
    return [*prefix, "cp", "-a", f"--reflink={reflink}", f"{os.fspath(source)}/.", os.fspath(dest)]


def remove_tree(path: Path, prefix: Prefix = ()) -> list[str]:
    # chmod first: a rootfs has read-only dirs that rm cannot empty otherwise.
    target = os.fspath(path)
    script = 'chmod -R u+rwX -- "$1" 2>/dev/null; rm -rf -- "$1"'
    return [*prefix, "sh", "-c", script, "remove-tree", target]
