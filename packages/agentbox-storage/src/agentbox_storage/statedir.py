"""What a state dir (a project's, or an agent's) holds that others must respect: its lock and
lease files, and which paths are mount points (a mounted overlay is not a plain dir)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from agentbox_storage import taskroot


def names(directory: Path) -> list[str]:
    """The entries of ``directory``, sorted (none when it cannot be read)."""
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def mount_points() -> frozenset[str]:
    """Every mount point of this mount namespace (``/proc/self/mountinfo``'s fifth field)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            fields = [line.split() for line in f]
    except OSError:
        return frozenset()
    return frozenset(x[4].replace("\\040", " ") for x in fields if len(x) > 4)


def lock_files(state_dir: Path) -> list[Path]:
    """The lock and lease files of a project: ``locks/*.lock``, ``<disk>.lease``,
    ``<dir>/lease`` (a host /nix overlay's) and each task's ``tasks/*/.task.lock``."""
    found = [state_dir / "locks" / n for n in names(state_dir / "locks") if n.endswith(".lock")]
    found += [state_dir / n for n in names(state_dir) if n.endswith(".lease")]
    found += [state_dir / n / "lease" for n in names(state_dir)]
    found += [state_dir / "tasks" / n / taskroot.LOCK_NAME for n in names(state_dir / "tasks")]
    return sorted(p for p in found if p.is_file() and not p.is_symlink())


def walk(top: str, skip: frozenset[str] = frozenset()) -> Iterator[os.DirEntry[str]]:
    """Every entry below the dir ``top``, not following symlinks nor descending into the
    dirs ``skip`` names (mount points); a dir that cannot be read (a subordinate id's, 0700)
    or an entry that cannot be told apart is passed over."""
    stack = [top]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir and entry.path not in skip:
                stack.append(entry.path)
            yield entry
