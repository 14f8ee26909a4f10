"""Writable per-task root filesystems made from a cached image rootfs, and their cleanup.

Backends (see ``backends.Backend``):
- ``btrfs-snapshot``: a writable subvolume snapshot of the cached rootfs (instant, CoW);
- ``fuse-overlay``: fuse-overlayfs with the cached rootfs as the lower layer;
- ``reflink``: ``cp -a --reflink=always``; fails rather than copy bytes; explicit opt-in only;
- ``auto``: btrfs-snapshot, then fuse-overlay, cleaning between attempts; never reflink, never
  a plain copy.

Commands that must see the image's file ownership (the cache is written inside a rootless user
namespace) run behind ``userns``, the wrapper argv (``buildah unshare``) the caller passes in;
it is empty when running as root.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import stat
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentbox_state.errors import AgentboxError, CommandError
from agentbox_state.lock import FileLock, LockGoneError
from agentbox_state.runner import DEFAULT_PATH, Runner, with_sbin
from agentbox_storage import argv
from agentbox_storage.backends import Backend
from agentbox_storage.errors import StorageError
from agentbox_storage.mounts import filesystem_type, is_dead_fuse, is_mounted

LOCK_NAME = ".task.lock"
PRESERVED_NAME = "preserved"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRoot:
    """A materialised task root: ``rootfs`` is what the guest boots from."""

    backend: Backend
    task_dir: Path
    rootfs: Path
    upper: Path | None = None
    work: Path | None = None


def layout(backend: Backend, task_dir: Path) -> TaskRoot:
    """Where a backend puts its output inside ``task_dir`` (pure)."""
    if backend is Backend.FUSE_OVERLAY:
        return TaskRoot(backend=backend, task_dir=task_dir,
                        rootfs=task_dir / "rootfs-fuse-overlay",
                        upper=task_dir / "upper-fuse-overlay",
                        work=task_dir / "work-fuse-overlay")  # fmt: skip
    if backend in (Backend.BTRFS_SNAPSHOT, Backend.REFLINK):
        return TaskRoot(
            backend=backend, task_dir=task_dir, rootfs=task_dir / f"rootfs-{backend.value}"
        )
    raise ValueError(f"{backend.value} is a choice of backends, not a layout")


def _tail(err: CommandError) -> str:
    """The line of a failed command's stderr that says what went wrong (its last error line)."""
    lines = err.stderr_tail.splitlines()
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [err.message])[-1]


def _subvolume_hint(path: Path, runner: Runner) -> str:
    where = runner.run(argv.findmnt_options(path), check=False).stdout.strip()
    fields = where.split()
    mountpoint = fields[0] if fields else "<mount point>"
    return (
        "deleting a btrfs subvolume without root needs the mount option user_subvol_rm_allowed"
        f" on {mountpoint} (now: {where or 'unknown'}); add it with: sudo mount -o "
        f"remount,user_subvol_rm_allowed {mountpoint} (and in /etc/fstab to keep it)"
    )


def _snapshot(source: Path, root: TaskRoot, runner: Runner, userns: Sequence[str]) -> None:
    try:
        runner.run(argv.subvolume_snapshot(source, root.rootfs, userns))
    except CommandError as err:
        raise StorageError(
            f"btrfs snapshot of {source} into {root.rootfs} failed: {_tail(err)}",
            hint="the image cache and the task dir must be on one btrfs filesystem; "
            "otherwise choose the fuse-overlay backend (agentbox microvm --storage, loftd "
            "--rootfs-backend)",
        ) from err


def _overlay(source: Path, root: TaskRoot, runner: Runner) -> None:
    assert root.upper is not None
    assert root.work is not None
    for d in (root.upper, root.work, root.rootfs):
        d.mkdir(parents=True)
    try:
        runner.run(argv.fuse_overlayfs(source, root.upper, root.work, root.rootfs))
    except CommandError as err:
        raise StorageError(
            f"fuse-overlayfs could not mount {source} at {root.rootfs}: {_tail(err)}",
            hint="install fuse-overlayfs and make /dev/fuse usable by you "
            "(it is 0666 on ordinary hosts)",
        ) from err


def _reflink(source: Path, root: TaskRoot, runner: Runner, userns: Sequence[str]) -> None:
    root.rootfs.mkdir(parents=True)
    try:
        runner.run(argv.copy_tree(source, root.rootfs, reflink="always", prefix=userns))
    except CommandError as err:
        raise StorageError(
            f"reflink copy of {source} into {root.rootfs} failed: {_tail(err)}",
            hint="reflink needs a copy-on-write filesystem (btrfs, XFS) holding both; it never "
            "falls back to copying bytes: choose --storage btrfs-snapshot or fuse-overlay",
        ) from err


def materialize(
    backend: Backend, source: Path, task_dir: Path, runner: Runner, *, userns: Sequence[str] = ()
) -> TaskRoot:
    """Make the task root for ``backend`` from the cached rootfs ``source`` inside ``task_dir``.

    Any output a killed earlier attempt left in ``task_dir`` is removed first; a failed attempt
    removes its own partial output before raising.
    """
    if backend is Backend.AUTO:
        return _auto(source, task_dir, runner, userns)
    root = layout(backend, task_dir)
    remove_output(root, runner, userns=userns)
    task_dir.mkdir(parents=True, exist_ok=True)
    try:
        if backend is Backend.BTRFS_SNAPSHOT:
            _snapshot(source, root, runner, userns)
        elif backend is Backend.FUSE_OVERLAY:
            _overlay(source, root, runner)
        else:
            _reflink(source, root, runner, userns)
    except BaseException:
        remove_output(root, runner, userns=userns)
        raise
    return root


AUTO_HINT = (
    "put the state dir (image cache and task dirs) on one btrfs, or install "
    "fuse-overlayfs; reflink is never chosen automatically (--storage reflink)"
)


def select(
    backend: Backend,
    source: Path,
    *,
    which: Callable[[str], str | None] | None = None,
    fstype: Callable[[Path], str | None] = filesystem_type,
) -> tuple[Backend, ...]:
    """The backends to try, in order, for ``backend`` and the cached rootfs ``source``.

    An explicit backend is tried as asked (its own errors are precise). ``auto`` keeps the ones
    this host can use: btrfs-snapshot when the cache is on btrfs and ``btrfs`` is installed,
    fuse-overlay when ``fuse-overlayfs`` is installed and /dev/fuse exists; none is an error
    saying why each was left out.
    """
    if backend is not Backend.AUTO:
        return (backend,)
    if which is None:  # where the runner will look: PATH and the sbin dirs
        path = with_sbin(os.environ.get("PATH") or DEFAULT_PATH)
        which = functools.partial(shutil.which, path=path)
    chosen, why = [], []
    kind = fstype(source)
    if kind != "btrfs":
        why.append(f"btrfs-snapshot: the image cache {source} is on {kind or 'an unknown fs'}")
    elif which("btrfs") is None:
        why.append("btrfs-snapshot: the btrfs command is missing (apt-get install btrfs-progs)")
    else:
        chosen.append(Backend.BTRFS_SNAPSHOT)
    if which("fuse-overlayfs") is None:
        why.append("fuse-overlay: fuse-overlayfs is missing (apt-get install fuse-overlayfs)")
    elif not os.path.exists("/dev/fuse"):
        why.append("fuse-overlay: /dev/fuse does not exist (modprobe fuse)")
    else:
        chosen.append(Backend.FUSE_OVERLAY)
    if not chosen:
        raise StorageError("no task root backend is usable here for auto:\n  " + "\n  ".join(why),
                           hint=AUTO_HINT)  # fmt: skip
    return tuple(chosen)


def materialize_first(
    backends: Sequence[Backend], source: Path, task_dir: Path, runner: Runner, *,
    userns: Sequence[str] = (),
) -> TaskRoot:  # fmt: skip
    """The first of ``backends`` that works (each failure cleans up after itself)."""
    failures = []
    for backend in backends:
        try:
            return materialize(backend, source, task_dir, runner, userns=userns)
        except StorageError as err:
            if len(backends) == 1:
                raise
            failures.append(f"{backend.value}: {err.message}")
    tried = ", then ".join(b.value for b in backends)
    raise StorageError(f"no task root backend worked (tried {tried}):\n  " + "\n  ".join(failures),
                       hint=AUTO_HINT)  # fmt: skip


def _auto(source: Path, task_dir: Path, runner: Runner, userns: Sequence[str]) -> TaskRoot:
    return materialize_first((Backend.BTRFS_SNAPSHOT, Backend.FUSE_OVERLAY), source, task_dir,
                             runner, userns=userns)  # fmt: skip


def unmount_fuse(merged: Path, runner: Runner) -> None:
    """Unmount a FUSE mount, even one whose daemon died: fusermount3, fusermount, umount, then
    the lazy forms. Does nothing when nothing is mounted there."""
    errors = []
    for cmd in argv.fuse_unmounts(merged):
        if not is_mounted(merged):
            return
        try:
            runner.run(cmd)
        except CommandError as err:
            errors.append(f"{cmd[0]}: {_tail(err)}")
    if is_mounted(merged):
        raise StorageError(
            f"cannot unmount {merged}: " + "; ".join(errors),
            hint=f"close what still uses it (fuser -m {merged}), then: fusermount3 -u {merged}",
        )


def remove_output(root: TaskRoot, runner: Runner, *, userns: Sequence[str] = ()) -> None:
    """Remove a backend's output (mount, subvolume, copy), if present. Keeps ``task_dir``."""
    if root.backend is Backend.FUSE_OVERLAY:
        unmount_fuse(root.rootfs, runner)
    elif root.backend is Backend.BTRFS_SNAPSHOT and is_subvolume(root.rootfs):
        _delete_subvolume(root.rootfs, runner, userns)
    for path in (root.rootfs, root.upper, root.work):
        if path is not None and os.path.lexists(path):
            runner.run(argv.remove_tree(path, userns))


def is_subvolume(path: Path) -> bool:
    """A btrfs subvolume's root dir has inode 256 and a device number of its own. A FUSE mount
    whose daemon died (it cannot even be stat'ed) is none."""
    try:
        st = path.lstat()
        parent = path.parent.lstat()
    except OSError as err:
        if isinstance(err, FileNotFoundError) or is_dead_fuse(err):
            return False
        raise
    return stat.S_ISDIR(st.st_mode) and st.st_ino == 256 and st.st_dev != parent.st_dev


def _delete_subvolume(path: Path, runner: Runner, userns: Sequence[str]) -> None:
    """``btrfs subvolume delete``; without root that needs user_subvol_rm_allowed, so on failure
    remove the files and let the kernel drop the emptied subvolume (newer kernels allow its
    owner that), and only if that fails too say how to add the mount option."""
    try:
        runner.run(argv.subvolume_delete(path, userns))
        return
    except CommandError as err:
        first = _tail(err)
    try:
        runner.run(argv.remove_tree(path, userns))
    except CommandError as err:
        raise StorageError(
            f"cannot delete the btrfs subvolume {path}: {first}; removing its files failed too: "
            f"{_tail(err)}",
            hint=_subvolume_hint(path, runner),
        ) from err


def cleanup_commands(root: TaskRoot, userns: Sequence[str] = ()) -> list[str]:
    """The shell lines that remove a preserved task root and its task dir later, in order."""
    lines = []
    if root.backend is Backend.FUSE_OVERLAY:
        lines.append(shlex.join(argv.fuse_unmounts(root.rootfs)[0]))
    elif root.backend is Backend.BTRFS_SNAPSHOT:
        lines.append(shlex.join(argv.subvolume_delete(root.rootfs, userns)))
    lines.append(shlex.join(argv.remove_tree(root.task_dir, userns)))
    return lines


def cleanup(
    root: TaskRoot, runner: Runner, *, userns: Sequence[str] = (), preserve: bool = False
) -> list[str]:
    """Remove the task root and its task dir; with ``preserve``, keep both, mark the task dir
    preserved (so ``collect_garbage`` leaves it) and return the commands to remove them later."""
    if preserve:
        (root.task_dir / PRESERVED_NAME).write_text(
            "\n".join(cleanup_commands(root, userns)) + "\n"
        )
        return cleanup_commands(root, userns)
    remove_output(root, runner, userns=userns)
    if os.path.lexists(root.task_dir):
        runner.run(argv.remove_tree(root.task_dir, userns))
    return []


def task_lock(task_dir: Path) -> FileLock:
    """Held by the processes that own a task for as long as they run (shared: the command line
    and the VM helper each hold it); free means abandoned."""
    return FileLock(task_dir / LOCK_NAME, what=f"task {task_dir.name}")


def _task_dirs(tasks_dir: Path) -> list[Path]:
    """The dirs in ``tasks_dir`` (not symlinks), sorted. A FUSE mount there whose daemon died is
    no task dir of ours (task roots are mounted inside task dirs) and is left alone: stat fails
    on it, and pathlib's ``is_dir`` would raise."""
    found = []
    for path in tasks_dir.iterdir():
        try:
            mode = path.lstat().st_mode
        except OSError as err:
            if isinstance(err, FileNotFoundError) or is_dead_fuse(err):
                continue
            raise
        if stat.S_ISDIR(mode):
            found.append(path)
    return sorted(found)


def _old_enough(task_dir: Path, before: float, *, include_preserved: bool) -> bool:
    """Not changed since ``before`` (and not preserved, unless those are included)."""
    if (task_dir / PRESERVED_NAME).exists() and not include_preserved:
        return False
    try:
        return task_dir.stat().st_mtime <= before
    except FileNotFoundError:
        return False


def collect_garbage(
    tasks_dir: Path,
    runner: Runner,
    *,
    userns: Sequence[str] = (),
    include_preserved: bool = False,
    min_age: float = 0.0,
    on_error: Callable[[Path, AgentboxError], None] | None = None,
    dry_run: bool = False,
    only: Collection[Path] | None = None,
) -> list[Path]:
    """Remove task dirs whose owners are gone (their task lock is free); returns what was removed.

    Live tasks (lock held) are never touched; preserved ones only with ``include_preserved``;
    none changed in the last ``min_age`` seconds (a task being set up has its dir before its
    lock). The lock is taken on the file that is there, never made anew (a dir removed
    meanwhile by its owner is skipped); a dir with no lock file at all is an owner killed
    between the two. A dir that cannot be removed goes to ``on_error`` and the rest go on;
    without ``on_error`` the error is raised. With ``dry_run`` nothing is taken or removed: the
    dirs that would go are returned (``agentbox gc --dry-run``); ``only`` limits it to those.
    """
    removed: list[Path] = []
    if not tasks_dir.is_dir():
        return removed
    now = time.time()
    for task_dir in _task_dirs(tasks_dir):
        if only is not None and task_dir not in only:
            continue
        if not _old_enough(task_dir, now - min_age, include_preserved=include_preserved):
            continue
        lock = task_lock(task_dir)
        if dry_run:
            probe = lock.probe()
            if probe is None or not probe.held:
                removed.append(task_dir)
            continue
        locked = True
        try:
            lock.acquire(create=False)
        except LockGoneError:
            if not task_dir.is_dir() or lock.path.exists():
                continue  # removed (or replaced) under us: nothing of ours to do
            locked = False  # never locked at all
        except AgentboxError:
            continue  # a live task, or one we cannot judge: leave it
        try:
            for backend in (Backend.FUSE_OVERLAY, Backend.BTRFS_SNAPSHOT, Backend.REFLINK):
                remove_output(layout(backend, task_dir), runner, userns=userns)
            runner.run(argv.remove_tree(task_dir, userns))
            removed.append(task_dir)
        except AgentboxError as err:
            if on_error is None:
                raise
            on_error(task_dir, err)
        finally:
            if locked:
                lock.release()
    return removed
