"""How much of a file or tree shares its blocks with other files: the extents the filesystem
marks shared (a reflink copy's, a btrfs snapshot's), read with the FIEMAP ioctl.

Linux's Documentation/filesystems/fiemap.rst: ``FS_IOC_FIEMAP`` takes a ``struct fiemap``
(``fm_start``, ``fm_length``, ``fm_flags``, ``fm_mapped_extents``, ``fm_extent_count``,
``fm_reserved``: 32 bytes) followed by ``fm_extent_count`` ``struct fiemap_extent`` slots
(``fe_logical``, ``fe_physical``, ``fe_length``, two reserved u64, ``fe_flags``, three
reserved u32: 56 bytes); ``FIEMAP_EXTENT_SHARED`` (0x2000) marks an extent that other files
use too, ``FIEMAP_EXTENT_LAST`` (0x1) the file's last one. A filesystem that shares nothing
(ext4, tmpfs) reports no shared extent; one without FIEMAP makes the ioctl fail, and its files
count as sharing nothing.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap)
EXTENT_LAST = 0x1
EXTENT_SHARED = 0x2000
_HEAD = struct.Struct("=QQIIII")
_EXTENT = struct.Struct("=QQQQQIIII")
_SLOTS = 128  # extents asked for per call
_WHOLE = 2**64 - 1  # FIEMAP_MAX_OFFSET: to the end of the file


def shared_in_file(fd: int) -> int:
    """Bytes of the open file ``fd`` in extents that other files share (0 where the
    filesystem cannot say)."""
    import fcntl

    shared = start = 0
    while True:
        request = bytearray(_HEAD.size + _SLOTS * _EXTENT.size)
        _HEAD.pack_into(request, 0, start, _WHOLE - start, 0, 0, _SLOTS, 0)
        try:
            fcntl.ioctl(fd, FS_IOC_FIEMAP, request)
        except OSError:  # no FIEMAP here (EOPNOTSUPP), or not a regular file's data
            return shared
        mapped = _HEAD.unpack_from(request, 0)[3]
        if mapped == 0:
            return shared
        for i in range(mapped):
            logical, _, length, _, _, flags, _, _, _ = _EXTENT.unpack_from(
                request, _HEAD.size + i * _EXTENT.size
            )
            if flags & EXTENT_SHARED:
                shared += length
            if flags & EXTENT_LAST:
                return shared
        start = logical + length


def shared_bytes(path: Path, *, skip: frozenset[str] = frozenset()) -> int:
    """Bytes of the regular files in ``path`` (a file, or a tree, not following symlinks nor
    entering the mount points ``skip`` names) that share their blocks with other files. A file
    this user cannot open counts as its own."""
    total = 0
    for file in _files(path, skip):
        try:
            fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            total += shared_in_file(fd)
        finally:
            os.close(fd)
    return total


def _files(path: Path, skip: frozenset[str]) -> list[str]:
    from agentbox_storage.statedir import walk

    try:
        st = path.lstat()
    except OSError:
        return []
    if stat.S_ISREG(st.st_mode):
        return [os.fspath(path)]
    if not stat.S_ISDIR(st.st_mode):
        return []
    return [e.path for e in walk(os.fspath(path), skip) if e.is_file(follow_symlinks=False)]
