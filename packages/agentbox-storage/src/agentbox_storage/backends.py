"""Task root filesystem backends: their names and the strict parser for them."""

from __future__ import annotations

import enum

from agentbox_storage.errors import StorageError


class Backend(enum.Enum):
    """How a writable per-task root is made from a cached image rootfs."""

    AUTO = "auto"  # btrfs-snapshot, then fuse-overlay; never reflink, never a plain copy
    BTRFS_SNAPSHOT = "btrfs-snapshot"
    FUSE_OVERLAY = "fuse-overlay"
    REFLINK = "reflink"  # explicit opt-in only


# Spellings that are close to a real name but ambiguous or outdated, with what to say instead.
MISSPELLINGS = {
    "btrfs": "say btrfs-snapshot ('btrfs' alone is ambiguous: reflink copies use btrfs too)",
    "overlay": "say fuse-overlay",
    "fuse-overlayfs": "say fuse-overlay",
    "snapshot": "say btrfs-snapshot",
}


def parse_backend(text: str, *, allowed: tuple[Backend, ...] = tuple(Backend)) -> Backend:
    """The backend named ``text``, if it is one of ``allowed``."""
    names = ", ".join(b.value for b in allowed)
    for backend in allowed:
        if backend.value == text:
            return backend
    hint = MISSPELLINGS.get(text, f"choose one of: {names}")
    raise StorageError(f"unknown task root backend {text!r} (accepted: {names})", hint=hint)
