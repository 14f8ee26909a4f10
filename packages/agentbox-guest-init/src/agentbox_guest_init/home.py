"""The dev user's home and runtime dirs (effects; the list itself is pure)."""

from __future__ import annotations

import os

from agentbox_guest_init.identity import DEV_HOME


def home_dirs(home: str = DEV_HOME) -> list[tuple[str, int]]:
    """(path, mode) of every dir the user's tools expect, parents first."""
    return [
        (home, 0o755),
        (f"{home}/.config", 0o755),
        (f"{home}/.local", 0o755),
        (f"{home}/.local/share", 0o755),
        (f"{home}/.local/state", 0o700),
        (f"{home}/.cache", 0o755),
        (f"{home}/.cache/tmp", 0o700),
    ]


def materialize(root: str, uid: int, gid: int, dirs: list[tuple[str, int]]) -> None:
    """Create the dirs owned by ``uid``/``gid``. An existing dir is only re-owned when root owns
    it (what a bind mount's auto-created parent looks like), never recursively: mounted user
    data under it keeps its owners."""
    for path, mode in dirs:
        full = os.path.join(root, path.lstrip("/"))
        try:
            os.mkdir(full, mode)
            created = True
        except FileExistsError:
            created = False
        st = os.lstat(full)
        if created or (st.st_uid == 0 and (st.st_uid, st.st_gid) != (uid, gid)):
            os.chown(full, uid, gid)
            os.chmod(full, mode)


def fill_own(root: str, uid: int, dirs: list[tuple[str, int]]) -> str | None:
    """Not root: create the missing dirs under a home that is already ``uid``'s (a pod's
    emptyDir its init container handed over), keeping what exists. A home that is missing or
    someone else's is left alone (nothing to fill; the image or orchestrator decides it).
    Returns the dir that could not be made, or None."""
    (home, _), rest = dirs[0], dirs[1:]
    try:
        if os.lstat(os.path.join(root, home.lstrip("/"))).st_uid != uid:
            return None
    except FileNotFoundError:
        return None
    for path, mode in rest:
        full = os.path.join(root, path.lstrip("/"))
        try:
            os.mkdir(full, mode)
        except FileExistsError:
            continue
        except OSError:
            return path
    return None


def runtime_dir(root: str, uid: int, gid: int) -> str:
    path = f"/run/user/{uid}"
    full = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    materialize(root, uid, gid, [(path, 0o700)])
    return path
