from pathlib import Path

from agentbox_cli.container.storage_check import VFS_FIX, vfs_warning


def test_warns_once_on_vfs(tmp_path: Path) -> None:
    marker = tmp_path / "state" / "vfs-warned"
    assert vfs_warning("vfs", marker) == VFS_FIX
    assert marker.read_text() == "warned about the vfs storage driver\n"
    assert vfs_warning("vfs", marker) is None


def test_quiet_on_overlay(tmp_path: Path) -> None:
    assert vfs_warning("overlay", tmp_path / "m") is None
    assert not (tmp_path / "m").exists()
