"""A user's subordinate ids (subuid(5), subgid(5)): what rootless containers map their users
to, for the doctor's checks and for who may reach a task's egress proxy (pure)."""

from __future__ import annotations


def parse_sub_ids(text: str, user: str, uid: int) -> tuple[tuple[int, int], ...]:
    """The ``user:first:count`` lines of ``text`` naming ``user`` or ``uid``."""
    found = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if (
            len(fields) == 3
            and fields[0] in (user, str(uid))
            and all(f.isdigit() for f in fields[1:])
        ):
            found.append((int(fields[1]), int(fields[2])))
    return tuple(found)
