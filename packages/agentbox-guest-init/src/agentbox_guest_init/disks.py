"""Finding a persistent disk by its virtio id and filesystem label."""

from __future__ import annotations

import glob

from agentbox_guest_init.contract import GuestError
from agentbox_guest_init.system import run

CANDIDATE_GLOBS = ("/dev/vd?", "/dev/sd?", "/dev/xvd?", "/dev/nvme?n?", "/dev/pmem?", "/dev/loop*")


def candidates(disk_id: str, preferred: tuple[str, ...] = ()) -> list[str]:
    """Where to look, in order: the preferred paths, the by-id links for ``disk_id``, then the
    usual block device names (pure apart from globbing)."""
    found = [*preferred, *sorted(glob.glob(f"/dev/disk/by-id/*{disk_id}*"))]
    for pattern in CANDIDATE_GLOBS:
        found += sorted(glob.glob(pattern))
    return list(dict.fromkeys(found))


def label_of(device: str) -> str | None:
    done = run(["blkid", "--probe", "--output", "value", "--match-tag", "LABEL", device],
               check=False)  # fmt: skip
    return done.stdout.strip() or None if done.returncode == 0 else None


def find_disk(label: str, disk_id: str, preferred: tuple[str, ...] = ()) -> str:
    """The block device carrying ``label``: preferred paths, then ``blkid -L``, then the
    candidate globs; ``GuestError`` naming label and id when there is none."""
    for device in preferred:
        if label_of(device) == label:
            return device
    by_label = run(["blkid", "-L", label], check=False).stdout.strip()
    if by_label:
        return by_label
    for device in candidates(disk_id, preferred):
        if label_of(device) == label:
            return device
    raise GuestError(f"persistent disk not found (label={label} id={disk_id})")
