"""Small effects on the container path that must not pull in subprocess or shutil (start-up)."""

from __future__ import annotations

import os


def write_sysctl(root: str, name: str, value: str) -> bool:
    """Best effort: False where /proc/sys is read-only (containers)."""
    path = os.path.join(root, "proc/sys", *name.split("."))
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(value)
        return True
    except OSError:
        return False


def which(name: str, path: str) -> str | None:
    """The first executable ``name`` on ``path`` (``shutil.which`` without importing shutil,
    whose archive support loads bz2 and lzma)."""
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None
