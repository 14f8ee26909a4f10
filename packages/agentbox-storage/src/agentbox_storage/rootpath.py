"""Finding files inside an image root filesystem as the guest will see them.

Symlinks in a rootfs are resolved against the rootfs, never the host: ``/bin -> usr/bin`` and an
absolute ``/usr/bin/x -> /opt/x`` both stay inside it. Components may be shell-style patterns
(``nix/store/*/bin/agentbox-guest-init``).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path

MAX_SYMLINKS = 40


def _is_pattern(part: str) -> bool:
    return any(c in part for c in "*?[")


def resolve_in_root(root: Path, relative: str, _depth: int = 0) -> Path | None:
    """The host path of ``relative`` inside ``root`` with symlinks followed inside ``root``;
    None when it does not exist (or a symlink loop)."""
    current = root
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    hops = _depth
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        try:
            st = candidate.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_SYMLINKS:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = root
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        current = candidate
    return current


def find_in_root(root: Path, pattern: str) -> list[Path]:
    """Every host path matching ``pattern`` inside ``root`` (symlinks resolved in-root), each
    once, sorted."""
    matches: set[Path] = set()

    def walk(prefix: str, rest: list[str]) -> None:
        if not rest:
            found = resolve_in_root(root, prefix)
            if found is not None:
                matches.add(found)
            return
        head, tail = rest[0], rest[1:]
        if not _is_pattern(head):
            walk(f"{prefix}/{head}", tail)
            return
        directory = resolve_in_root(root, prefix)
        if directory is None or not directory.is_dir():
            return
        for name in sorted(os.listdir(directory)):
            if fnmatch.fnmatchcase(name, head):
                walk(f"{prefix}/{name}", tail)

    walk("", [p for p in pattern.split("/") if p])
    return sorted(matches)


def is_executable_file(path: Path) -> bool:
    st = path.lstat()
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)
