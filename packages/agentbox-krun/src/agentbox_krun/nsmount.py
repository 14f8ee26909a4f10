"""Mounts the helper makes for the VM in a mount namespace of its own.

loftd's ``/nix`` is a kernel overlay on the host (the image's /nix below, the workspace's
persistent upper above), mounted on ``<task root>/nix`` so libkrun's virtiofs root shows it to
the guest. The helper first leaves the caller's mount namespace (``unshare(CLONE_NEWNS)`` and
makes every mount private), so the overlay exists only while the helper (the VM) lives: nothing
to unmount afterwards, nothing left behind when it is killed. This needs CAP_SYS_ADMIN: root on
the host, or root inside a user namespace (rootless loftd runs the helper in ``buildah
unshare``), where the overlay keeps its metadata in ``user.*`` xattrs (``userxattr``): the
``trusted.*`` ones are not settable there, and without them replacing a directory that came from
the image fails with EIO.
"""

from __future__ import annotations

import ctypes
import errno as errno_names
import os

from agentbox_krun.errors import KrunError
from agentbox_krun.launchconf import Mount, NixOverlay

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT = 32
MS_NOATIME, MS_NODIRATIME = 1024, 2048
MS_BIND = 4096
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
ST_RELATIME = 4096  # statvfs's bit for relatime (the others share MS_* values)

# overlayfs splits its options on ',' and lowerdir on ':', and reads '\' as an escape
UNSAFE = (",", ":", "\\", "\n")


def in_user_namespace(uid_map: str | None = None) -> bool:
    """Whether this process is in a user namespace other than the host's (its uid_map is not
    the identity over the whole range)."""
    if uid_map is None:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            uid_map = f.read()
    return uid_map.split() != ["0", "0", "4294967295"]


def overlay_options(nix: NixOverlay, *, userns: bool = False) -> str:
    """The overlay's option string; refuses paths the kernel would split or unescape (pure)."""
    for name, path in (("lower", nix.lower), ("upper", nix.upper), ("work", nix.work)):
        bad = [c for c in UNSAFE if c in path]
        if not os.path.isabs(path):
            raise KrunError.invalid(f"the /nix overlay's {name} dir {path!r} is not absolute")
        if bad:
            raise KrunError.invalid(
                f"the /nix overlay's {name} dir {path!r} contains {bad[0]!r}, which overlayfs "
                "cannot take in a path"
            )
    options = f"lowerdir={nix.lower},upperdir={nix.upper},workdir={nix.work}"
    return options + ",userxattr" if userns else options


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare.argtypes = [ctypes.c_int]
    libc.unshare.restype = ctypes.c_int
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_char_p]  # fmt: skip
    libc.mount.restype = ctypes.c_int
    return libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        hint = None
        if err == errno_names.EPERM and in_user_namespace():
            hint = ("the kernel refused this mount in a user namespace: unprivileged overlayfs "
                    "needs Linux 5.11 or later, and a mount's nosuid/nodev/noexec cannot be "
                    "dropped there")  # fmt: skip
        elif err == errno_names.EPERM:
            hint = ("mounting needs root, or root in a user namespace (rootless loftd starts "
                    "the helper inside 'buildah unshare')")  # fmt: skip
        raise KrunError(what, err, hint=hint)


def _inside(task_rootfs: str, target: str) -> str:
    """``<task_rootfs><target>``, refused when an existing part of it is a symlink (an image
    could point its /nix or /workspace anywhere on the host)."""
    path = os.path.join(task_rootfs, target.lstrip("/"))
    expected = os.path.join(os.path.realpath(task_rootfs), os.path.normpath(target).lstrip("/"))
    if os.path.realpath(path) != expected.rstrip("/"):
        raise KrunError.invalid(f"{path} leads through a symlink: refusing to mount there")
    return path


def private_namespace() -> None:
    """Leave the caller's mount namespace; nothing mounted from here on propagates back."""
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")


def mount_nix(nix: NixOverlay, task_rootfs: str) -> str:
    """Mount the /nix overlay on ``<task_rootfs>/nix`` (call ``private_namespace`` first).
    Returns the mount point."""
    options = overlay_options(nix, userns=in_user_namespace())
    target = _inside(task_rootfs, "/nix")
    if not os.path.isdir(target):
        raise KrunError.invalid(f"{target} is not a directory: the image has no /nix to cover")
    libc = _libc()
    rc = libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, options.encode())
    _check(rc, f"mount -t overlay -o {options} overlay {target}")
    return target


def bind(mount: Mount, task_rootfs: str) -> str:
    """Bind ``mount.source`` at ``<task_rootfs><mount.target>`` (made when missing; the task root
    is this task's own), read-only when asked (the top mount only; submounts keep theirs).
    Returns the mount point."""
    target = _inside(task_rootfs, mount.target)
    if not os.path.isdir(mount.source):
        raise KrunError.invalid(f"{mount.source} is not a directory (for {mount.target})")
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as err:
        raise KrunError(f"mkdir {target}", err.errno or errno_names.EIO) from err
    libc = _libc()
    src, dst = os.fsencode(mount.source), os.fsencode(target)
    what = f"mount --rbind {mount.source} {target}"
    _check(libc.mount(src, dst, None, MS_BIND | MS_REC, None), what)
    if mount.readonly:
        # keep the flags the source mount has: in a user namespace they are locked, and a
        # remount that drops them is refused
        have = os.statvfs(mount.source).f_flag
        keep = have & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
        keep |= MS_RELATIME if have & ST_RELATIME else 0
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | keep
        _check(libc.mount(None, dst, None, flags, None), f"mount -o remount,bind,ro {target}")
    return target
