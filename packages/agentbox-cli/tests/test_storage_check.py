from pathlib import Path

from agentbox_cli.container.storage_check import VFS_FIX, vfs_warning
from agentbox_state.testing import RecordingRunner


def test_warns_once_on_vfs(tmp_path: Path) -> None:
    rec = RecordingRunner()
    rec.script("podman", "info", stdout="vfs\n")
    marker = tmp_path / "state" / "vfs-warned"
    assert vfs_warning(rec, marker) == VFS_FIX
    assert vfs_warning(rec, marker) is None
    assert rec.argvs == [["podman", "info", "--format", "{{.Store.GraphDriverName}}"]]


def test_quiet_on_overlay(tmp_path: Path) -> None:
    rec = RecordingRunner()
    rec.script("podman", "info", stdout="overlay\n")
    assert vfs_warning(rec, tmp_path / "m") is None
    assert not (tmp_path / "m").exists()


def test_debug_is_podmans_log_level(tmp_path: Path) -> None:
    rec = RecordingRunner()
    rec.script("podman", "--log-level=debug", "info", stdout="vfs\n",
               stderr='time="t" level=debug msg="Shutting down engines"\n')  # fmt: skip
    assert vfs_warning(rec, tmp_path / "m", debug=True) == VFS_FIX
    assert rec.argvs == [
        ["podman", "--log-level=debug", "info", "--format", "{{.Store.GraphDriverName}}"],
    ]
