"""What is mounted where, read from the kernel (``/proc/self/mountinfo``).

``os.path.ismount`` says False for a FUSE mount whose daemon died (every access to it fails, see
``DEAD_FUSE_ERRNOS``), which is exactly the mount we must still clean up; the mount table does
not lie.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

DEAD_FUSE_ERRNOS = frozenset({errno.ENOTCONN, errno.ECONNABORTED})
"""The errnos with which a FUSE mount whose daemon died fails every access (stat, open, listdir).

Both mean the same thing, and which one a caller gets is not ours to choose: when the daemon
dies the kernel aborts the connection, a request already in flight ends with ECONNABORTED
("Software caused connection abort") and any later one with ENOTCONN ("Transport endpoint is not
connected"). So an access racing the daemon's death may get either: which one a machine shows
depends on its timing and kernel. Recognise a dead mount with ``is_dead_fuse`` (and find it in
the mount table); never match one errno or its text."""


def is_dead_fuse(err: BaseException) -> bool:
    """Whether ``err`` is what accessing a FUSE mount whose daemon died raises."""
    return isinstance(err, OSError) and err.errno in DEAD_FUSE_ERRNOS


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \\ooo (octal)
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 1 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points(mountinfo: str) -> list[str]:
    """Mount points listed in a mountinfo text, in order."""
    points = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.append(_unescape(fields[4]))
    return points


def is_mounted(path: Path, mountinfo_file: str = "/proc/self/mountinfo") -> bool:
    """Whether something is mounted at ``path``, from the mount table (which names mount points
    by their real path: symlinks on the way are resolved first). True for a dead FUSE mount."""
    with open(mountinfo_file, encoding="utf-8", errors="surrogateescape") as f:
        table = f.read()
    return os.path.realpath(path) in mount_points(table)


def filesystem_type(path: Path, mountinfo_file: str = "/proc/self/mountinfo") -> str | None:
    """The type of the filesystem ``path`` lives on (e.g. ``btrfs``), from the mount table: the
    longest mount point containing it. None when the table names none."""
    with open(mountinfo_file, encoding="utf-8", errors="surrogateescape") as f:
        return fstype_of(os.path.realpath(path), f.read())


def fstype_of(path: str, mountinfo: str) -> str | None:
    """``filesystem_type`` on a given table (pure)."""
    best, kind = "", None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 5 or " - " not in line:
            continue
        point = _unescape(fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, line.split(" - ", 1)[1].split(" ")[0]
    return kind
