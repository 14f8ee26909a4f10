"""Sparse btrfs raw disk images: create, validate, grow, reset, report, lease.

A disk image holds user state (the /nix store, container images), so every operation checks
before it acts and refuses rather than guesses: an existing file is reused only when it is a
regular file that blkid says is btrfs; nothing is reformatted, truncated or removed unless the
caller asked for exactly that (``reset_disk(force=True)``) and every check passed first.

Callers hold the disk's lease (``lease(path)``) around any of these calls, so two tasks never
write one disk; ``open_disk`` does both.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agentbox_state.errors import CommandError
from agentbox_state.lock import FileLock
from agentbox_state.parse import GIB, format_size
from agentbox_state.runner import Runner
from agentbox_storage import argv
from agentbox_storage.errors import StorageError

DEFAULT_SIZE = 64 * GIB


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskSpec:
    """One managed disk: its file name in the workspace state dir, filesystem label and the
    virtio block id the guest finds it by. Each app declares its own (storage names none)."""

    file_name: str
    label: str
    block_id: str
    purpose: str
    default_size: int = DEFAULT_SIZE


@dataclass(frozen=True, slots=True)
class Ensured:
    path: Path
    created: bool
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskUsage:
    """What a managed disk looks like on the host (for ``agentbox disks``)."""

    path: Path
    exists: bool
    apparent: int = 0
    allocated: int = 0
    label: str | None = None
    fstype: str | None = None
    valid: bool = False
    problem: str | None = None


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"), (stat.S_ISBLK, "a block device"),
        (stat.S_ISCHR, "a character device"), (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    ):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def _move_away(path: Path) -> str:
    return f"move it away (mv {path} {path}.old) and agentbox creates a fresh disk there"


def _tool(runner: Runner, cmd: list[str], package: str) -> str:
    """Run a storage tool; a missing tool becomes an install hint naming the package."""
    try:
        return runner.run(cmd).stdout
    except CommandError as err:
        if err.returncode is None:
            raise StorageError(
                f"{cmd[0]} is needed but cannot be run: {err.message}",
                hint=f"install {package} (apt-get install {package})",
            ) from err
        raise


def fstype(path: Path, runner: Runner) -> str | None:
    """The filesystem blkid finds in ``path``, or None when it finds none."""
    cmd = argv.blkid_value(path, "TYPE")
    try:
        out = runner.run(cmd, check=False)
    except CommandError as err:
        raise StorageError(
            f"blkid is needed to check {path} but cannot be run: {err.message}",
            hint="install util-linux (apt-get install util-linux)",
        ) from err
    if out.returncode == 2:  # blkid: nothing recognised
        return None
    if out.returncode != 0:
        raise StorageError(
            f"blkid could not read {path} (exit status {out.returncode}): {out.stderr.strip()}",
            hint="check that the file is readable by you",
        )
    return out.stdout.strip() or None


def check_disk(path: Path, runner: Runner) -> int:
    """Validate an existing disk image and return its apparent size; raise when it is anything
    but a non-empty regular file holding btrfs. Reads only."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise StorageError(
            f"disk image {path} does not exist",
            hint="start agentbox once in this project to create it",
        ) from None
    if stat.S_ISLNK(st.st_mode):
        raise StorageError(
            f"{path} is a symlink (to {os.readlink(path)}), not a disk image; "
            "refusing to follow it",
            hint=f"agentbox manages a regular file at this path: {_move_away(path)}",
        )
    if not stat.S_ISREG(st.st_mode):
        raise StorageError(
            f"{path} is {_kind(st.st_mode)}, not a disk image; refusing to touch it",
            hint=_move_away(path),
        )
    if st.st_size == 0:
        raise StorageError(
            f"{path} is an empty file, not a btrfs disk image; refusing to format it",
            hint=_move_away(path),
        )
    found = fstype(path, runner)
    if found != "btrfs":
        what = f"holds a {found} filesystem" if found else "holds no filesystem blkid recognises"
        raise StorageError(
            f"{path} {what}, expected btrfs; refusing to reformat it",
            hint=_move_away(path),
        )
    return st.st_size


def ensure_disk(path: Path, spec: DiskSpec, runner: Runner, *, size: int | None = None) -> Ensured:
    """Reuse a valid disk at ``path`` or create a sparse btrfs one; never touch anything else."""
    try:
        return Ensured(path, False, check_disk(path, runner))
    except StorageError:
        if os.path.lexists(path):
            raise
    path.parent.mkdir(parents=True, exist_ok=True)
    want = spec.default_size if size is None else size
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # appeared meanwhile (callers should hold the lease): check it
        return Ensured(path, False, check_disk(path, runner))
    try:
        os.ftruncate(fd, want)  # sparse: the host allocates only what btrfs writes
    finally:
        os.close(fd)
    try:
        _tool(runner, argv.mkfs_btrfs(path, spec.label), "btrfs-progs")
    except BaseException:
        path.unlink()  # ours: created exclusively just above, nothing of the user's in it
        raise
    return Ensured(path, True, want)


def grow_disk(path: Path, target: int, runner: Runner) -> tuple[int, int]:
    """Extend the sparse file to ``target`` bytes (grow only); returns (old, new) sizes.

    The filesystem inside grows separately (``btrfs filesystem resize max``, in the guest or
    with ``resize_filesystem_on_host``)."""
    current = check_disk(path, runner)
    if target <= current:
        relation = "the same as" if target == current else "smaller than"
        raise StorageError(
            f"refusing to resize {path}: {format_size(target)} is {relation} its current size "
            f"{format_size(current)}; disks only grow",
            hint=f"give a size larger than {format_size(current)}",
        )
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)  # no O_TRUNC, ever
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != current:
            raise StorageError(f"{path} changed while it was being resized; nothing was done")
        os.ftruncate(fd, target)
    finally:
        os.close(fd)
    return current, target


def reset_disk(path: Path, spec: DiskSpec, runner: Runner, *, force: bool) -> Ensured:
    """Delete the managed disk file at ``path`` and create a fresh one. Needs ``force``; refuses
    anything that is not a regular file. All data on the disk is lost."""
    if not force:
        raise StorageError(
            f"resetting {path} deletes everything on {spec.purpose}; refusing without --force",
            hint="add --force if that is what you want",
        )
    try:
        st = path.lstat()
    except FileNotFoundError:
        return ensure_disk(path, spec, runner)
    if not stat.S_ISREG(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else _kind(st.st_mode)
        raise StorageError(
            f"{path} is {kind}, not a disk file agentbox manages; refusing to remove it",
            hint=f"look at it yourself; {_move_away(path)}",
        )
    path.unlink()
    return ensure_disk(path, spec, runner)


def disk_usage(path: Path, runner: Runner) -> DiskUsage:
    """Apparent size, host allocation, label and validity of one disk; never raises for a bad
    disk (the problem is reported instead)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return DiskUsage(path=path, exists=False, problem="not created yet")
    apparent, allocated = st.st_size, st.st_blocks * 512
    try:
        check_disk(path, runner)
    except StorageError as err:
        return DiskUsage(path=path, exists=True, apparent=apparent, allocated=allocated,
                         problem=err.message)  # fmt: skip
    label = runner.run(argv.blkid_value(path, "LABEL"), check=False).stdout.strip() or None
    return DiskUsage(path=path, exists=True, apparent=apparent, allocated=allocated,
                     label=label, fstype="btrfs", valid=True)  # fmt: skip


def lease(path: Path) -> FileLock:
    """The lease that keeps two tasks from attaching one disk read-write: ``<disk>.lease``."""
    return FileLock(path.with_name(path.name + ".lease"), what=f"disk {path}")


@contextmanager
def open_disk(
    path: Path, spec: DiskSpec, runner: Runner, *, wait: float = 0.0
) -> Iterator[Ensured]:
    """Lease the disk, then reuse or create it; the lease is held until the block ends."""
    held = lease(path)
    held.acquire(wait=wait)
    try:
        yield ensure_disk(path, spec, runner)
    finally:
        held.release()


def resize_filesystem_on_host(path: Path, runner: Runner, mountpoint: Path) -> None:
    """Grow the btrfs inside ``path`` to fill the file (root only): attach a loop device,
    refresh its capacity, mount, ``btrfs filesystem resize max``, unmount, detach."""
    check_disk(path, runner)
    device = _tool(runner, argv.losetup_attach(path), "util-linux").strip()
    try:
        runner.run(argv.losetup_refresh(device))
        mountpoint.mkdir(parents=True, exist_ok=True)
        runner.run(argv.mount(device, mountpoint))
        try:
            runner.run(argv.btrfs_resize_max(mountpoint))
        finally:
            runner.run(argv.umount(mountpoint))
    finally:
        runner.run(argv.losetup_detach(device))
