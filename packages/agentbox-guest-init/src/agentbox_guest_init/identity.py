"""The ``dev`` user: pure edits of /etc/passwd and /etc/group, and the privilege drop."""

from __future__ import annotations

import os

DEV = "dev"
DEV_HOME = "/home/dev"


def passwd_with_dev(text: str, uid: int, gid: int, shell: str) -> str:
    """``text`` with every ``dev:`` entry replaced by one for ``uid``/``gid`` (idempotent)."""
    lines = [line for line in text.splitlines() if not line.startswith(f"{DEV}:")]
    lines.append(f"{DEV}:x:{uid}:{gid}:dev user:{DEV_HOME}:{shell}")
    return "\n".join(lines) + "\n"


def group_with_dev(text: str, gid: int, members: tuple[str, ...] = ()) -> str:
    """``text`` with every ``dev:`` group replaced by one with ``gid`` (idempotent)."""
    lines = [line for line in text.splitlines() if not line.startswith(f"{DEV}:")]
    lines.append(f"{DEV}:x:{gid}:{','.join(members)}")
    return "\n".join(lines) + "\n"


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
