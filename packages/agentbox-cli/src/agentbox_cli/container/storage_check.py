"""Warn once when rootless Podman copies whole images for every container (the vfs driver)."""

from __future__ import annotations

from pathlib import Path

VFS_FIX = (
    "agentbox: warning: your Podman uses the vfs storage driver, which copies the whole image "
    "for every container (about 7x slower starts). To use overlay instead, put\n"
    '    [storage]\n    driver = "overlay"\n'
    "in ~/.config/containers/storage.conf and run `podman system reset` (this deletes your "
    "local images and containers; rebuild the image with `agentbox image build`)."
)


def vfs_warning(driver: str, marker: Path) -> str | None:
    """The warning text the first time the storage ``driver`` (as ``podman image inspect``
    says it: the cold start asks it anyway) is vfs, remembered in ``marker``."""
    if driver != "vfs" or marker.exists():
        return None
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("warned about the vfs storage driver\n")
    return VFS_FIX
