"""The ``dev`` user: pure edits of /etc/passwd and /etc/group, and the privilege drop."""

from __future__ import annotations

import os

DEV = "dev"
DEV_HOME = "/home/dev"


def _with_entry(text: str, entry: str, number: int) -> str:
    """``text`` without its ``dev:`` lines, ``entry`` placed before the first other line with
    the same id (so that lookups by id find dev; podman's keep-id adds the host user's own
    name for that id) or at the end. Nothing else is removed."""
    lines = [line for line in text.splitlines() if not line.startswith(f"{DEV}:")]
    for index, line in enumerate(lines):
        fields = line.split(":")
        if len(fields) > 2 and fields[2] == str(number):
            lines.insert(index, entry)
            break
    else:
        lines.append(entry)
    return "\n".join(lines) + "\n"


def passwd_with_dev(text: str, uid: int, gid: int, shell: str) -> str:
    """``text`` with one ``dev`` entry for ``uid``/``gid`` (idempotent)."""
    return _with_entry(text, f"{DEV}:x:{uid}:{gid}:dev user:{DEV_HOME}:{shell}", uid)


def group_with_dev(text: str, gid: int, members: tuple[str, ...] = ()) -> str:
    """``text`` with one ``dev`` group with ``gid`` (idempotent)."""
    return _with_entry(text, f"{DEV}:x:{gid}:{','.join(members)}", gid)


def supplementary_groups(group_text: str, user: str, primary: int) -> list[int]:
    """The gids whose member list names ``user``, plus the primary gid, each once."""
    gids = [primary]
    for line in group_text.splitlines():
        fields = line.split(":")
        if len(fields) == 4 and user in fields[3].split(",") and fields[2].isdigit():
            gid = int(fields[2])
            if gid not in gids:
                gids.append(gid)
    return gids


def drop_privileges(uid: int, gid: int, groups: list[int]) -> None:
    """Supplementary groups, then gid, then uid: the only order that can work."""
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
