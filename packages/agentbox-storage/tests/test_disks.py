"""Raw disks against the real mkfs.btrfs / blkid / losetup, as root and as an ordinary user."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agentbox_state.errors import LockHeldError
from agentbox_state.parse import GIB
from agentbox_state.runner import SubprocessRunner
from agentbox_state.testing import HidingRunner, RecordingRunner
from agentbox_storage import disks
from agentbox_storage.disks import DiskSpec
from agentbox_storage.errors import StorageError
from agentbox_testing import require_root, run_as_user

MIB = 1024**2
# a disk spec shaped like an app's /nix disk, at the default size
NIX = DiskSpec(file_name="nix.raw", label="AGENTBOX_NIX", block_id="agentbox-nix",
               purpose="the /nix store disk")  # fmt: skip
SMALL = DiskSpec(file_name="t.raw", label="AGENTBOX_TEST", block_id="t", purpose="a test disk",
                 default_size=256 * MIB)  # fmt: skip
RUNNER = SubprocessRunner(os.environ)
pytestmark = pytest.mark.btrfs  # the real mkfs.btrfs, blkid and btrfs tools


def uuid(path: Path) -> str:
    return RUNNER.run(["blkid", "--probe", "-o", "value", "-s", "UUID", str(path)]).stdout.strip()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_create_is_sparse_btrfs_with_label(tmp_path: Path) -> None:
    path = tmp_path / "state" / "libkrun-nix.raw"
    made = disks.ensure_disk(path, NIX, RUNNER)
    assert made == disks.Ensured(path, True, 64 * GIB)
    st = path.stat()
    assert st.st_size == 64 * GIB
    assert st.st_blocks * 512 < 64 * MIB, "the image must be sparse"
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert disks.fstype(path, RUNNER) == "btrfs"
    usage = disks.disk_usage(path, RUNNER)
    assert (usage.valid, usage.label, usage.fstype, usage.apparent) == (
        True, "AGENTBOX_NIX", "btrfs", 64 * GIB,
    )  # fmt: skip
    assert usage.allocated == st.st_blocks * 512


def test_existing_btrfs_is_reused_not_reformatted(tmp_path: Path) -> None:
    path = tmp_path / "d.raw"
    disks.ensure_disk(path, SMALL, RUNNER)
    before = uuid(path)
    again = disks.ensure_disk(path, SMALL, RUNNER, size=GIB)
    assert again == disks.Ensured(path, False, 256 * MIB)
    assert uuid(path) == before


def _symlink(tmp_path: Path) -> Path:
    target = tmp_path / "real.raw"
    disks.ensure_disk(target, SMALL, RUNNER)
    link = tmp_path / "d.raw"
    link.symlink_to(target)
    return link


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "d.raw"
    path.mkdir()
    (path / "keep").write_text("precious")
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "d.raw"
    path.touch()
    return path


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "d.raw"
    path.write_bytes(os.urandom(2 * MIB))
    return path


def _ext4(tmp_path: Path) -> Path:
    path = tmp_path / "d.raw"
    subprocess.run(["truncate", "-s", "64M", str(path)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True)
    return path


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "d.raw"
    os.mkfifo(path)
    return path


def _device(tmp_path: Path) -> Path:
    require_root("creating a device node")
    path = tmp_path / "d.raw"
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    return path


def fingerprint(path: Path) -> object:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path), digest(path.resolve()))
    if stat.S_ISDIR(st.st_mode):
        return (
            "dir",
            st.st_ino,
            sorted(p.name for p in path.iterdir()),
            (path / "keep").read_text(),
        )
    if stat.S_ISREG(st.st_mode):
        return ("file", st.st_ino, st.st_size, digest(path))
    return ("other", st.st_ino, st.st_mode, st.st_rdev)


REFUSALS = [
    pytest.param(_symlink, "is a symlink (to {target}), not a disk image; refusing to follow it",
                 id="symlink"),
    pytest.param(_directory, "is a directory, not a disk image; refusing to touch it", id="dir"),
    pytest.param(_empty, "is an empty file, not a btrfs disk image; refusing to format it",
                 id="empty"),
    pytest.param(_garbage, "holds no filesystem blkid recognises, expected btrfs; refusing to "
                 "reformat it", id="no-filesystem"),
    pytest.param(_ext4, "holds a ext4 filesystem, expected btrfs; refusing to reformat it",
                 id="ext4"),
    pytest.param(_fifo, "is a named pipe, not a disk image; refusing to touch it", id="fifo"),
    pytest.param(_device, "is a character device, not a disk image; refusing to touch it",
                 id="device", marks=pytest.mark.root),
]  # fmt: skip


@pytest.mark.parametrize(("make", "problem"), REFUSALS)
@pytest.mark.parametrize("operation", ["ensure", "grow", "host-resize"])
def test_refusals_name_the_path_and_change_nothing(
    tmp_path: Path, make: object, problem: str, operation: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    before = fingerprint(path)
    operations: dict[str, Callable[[], object]] = {
        "ensure": lambda: disks.ensure_disk(path, SMALL, RUNNER),
        "grow": lambda: disks.grow_disk(path, 2 * GIB, RUNNER),
        "host-resize": lambda: disks.resize_filesystem_on_host(path, RUNNER, tmp_path / "mnt"),
    }
    with pytest.raises(StorageError) as caught:
        operations[operation]()
    target = os.readlink(path) if path.is_symlink() else ""
    assert caught.value.message == f"{path} {problem.format(target=target)}"
    assert caught.value.hint is not None
    assert f"mv {path} {path}.old" in caught.value.hint
    assert fingerprint(path) == before


def test_grow_is_grow_only_and_keeps_the_filesystem(tmp_path: Path) -> None:
    path = tmp_path / "d.raw"
    disks.ensure_disk(path, SMALL, RUNNER)
    before = uuid(path)
    for target, relation in ((256 * MIB, "the same as"), (128 * MIB, "smaller than")):
        with pytest.raises(StorageError) as caught:
            disks.grow_disk(path, target, RUNNER)
        assert caught.value.message == (
            f"refusing to resize {path}: {target // MIB}MiB is {relation} its current size "
            "256MiB; disks only grow"
        )
        assert caught.value.hint == "give a size larger than 256MiB"
    assert path.stat().st_size == 256 * MIB
    assert disks.grow_disk(path, GIB, RUNNER) == (256 * MIB, GIB)
    assert path.stat().st_size == GIB
    assert path.stat().st_blocks * 512 < 64 * MIB
    assert uuid(path) == before


def test_grow_missing_disk(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as caught:
        disks.grow_disk(tmp_path / "nope.raw", GIB, RUNNER)
    assert caught.value.message == f"disk image {tmp_path}/nope.raw does not exist"
    assert not (tmp_path / "nope.raw").exists()


def fs_total_bytes(path: Path) -> int:
    out = RUNNER.run(["btrfs", "inspect-internal", "dump-super", str(path)]).stdout
    for line in out.splitlines():
        if line.startswith("total_bytes"):
            return int(line.split()[1])
    raise AssertionError(out)


@pytest.mark.root
def test_host_side_filesystem_resize(tmp_path: Path) -> None:
    require_root("loop devices and mount")
    path = tmp_path / "d.raw"
    disks.ensure_disk(path, SMALL, RUNNER)
    assert fs_total_bytes(path) == 256 * MIB
    disks.grow_disk(path, GIB, RUNNER)
    assert fs_total_bytes(path) == 256 * MIB  # the file grew, the filesystem not yet
    disks.resize_filesystem_on_host(path, RUNNER, tmp_path / "mnt")
    assert fs_total_bytes(path) == GIB
    assert not os.path.ismount(tmp_path / "mnt")
    losetup = RUNNER.run(["losetup", "--associated", str(path)]).stdout
    assert losetup == "", "the loop device must be detached"


def test_reset_needs_force_and_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "d.raw"
    disks.ensure_disk(path, SMALL, RUNNER)
    before = uuid(path)
    with pytest.raises(StorageError) as caught:
        disks.reset_disk(path, SMALL, RUNNER, force=False)
    assert caught.value.message == (
        f"resetting {path} deletes everything on a test disk; refusing without --force"
    )
    assert uuid(path) == before
    fresh = disks.reset_disk(path, SMALL, RUNNER, force=True)
    assert fresh == disks.Ensured(path, True, 256 * MIB)
    assert uuid(path) != before
    assert disks.fstype(path, RUNNER) == "btrfs"


@pytest.mark.parametrize("make", [_symlink, _directory, _fifo])
def test_reset_refuses_what_it_does_not_manage(tmp_path: Path, make: object) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    before = fingerprint(path)
    with pytest.raises(StorageError, match="not a disk file agentbox manages; refusing to remove"):
        disks.reset_disk(path, SMALL, RUNNER, force=True)
    assert fingerprint(path) == before


def test_reset_of_a_corrupt_disk_is_allowed(tmp_path: Path) -> None:
    path = _garbage(tmp_path)
    assert disks.reset_disk(path, SMALL, RUNNER, force=True).created
    assert disks.fstype(path, RUNNER) == "btrfs"


def test_usage_reports_problems_without_raising(tmp_path: Path) -> None:
    assert disks.disk_usage(tmp_path / "none.raw", RUNNER) == disks.DiskUsage(
        path=tmp_path / "none.raw", exists=False, problem="not created yet"
    )
    bad = _garbage(tmp_path)
    usage = disks.disk_usage(bad, RUNNER)
    assert (usage.exists, usage.valid, usage.apparent) == (True, False, 2 * MIB)
    assert usage.problem == (
        f"{bad} holds no filesystem blkid recognises, expected btrfs; refusing to reformat it"
    )


def test_missing_mkfs_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "d.raw"
    runner = HidingRunner({"PATH": "/usr/bin:/bin"}, hide=["mkfs.btrfs"])
    with pytest.raises(StorageError) as caught:
        disks.ensure_disk(path, SMALL, runner)
    assert caught.value.hint == "install btrfs-progs (apt-get install btrfs-progs)"
    assert not path.exists()


def test_failed_mkfs_removes_only_the_file_it_created(tmp_path: Path) -> None:
    rec = RecordingRunner()
    rec.script("mkfs.btrfs", returncode=1, stderr="ERROR: no space\n")
    path = tmp_path / "d.raw"
    with pytest.raises(Exception, match="failed with exit status 1"):
        disks.ensure_disk(path, SMALL, rec)
    assert not path.exists()
    assert rec.argvs == [
        ["mkfs.btrfs", "--quiet", "--label", "AGENTBOX_TEST", str(path)],
    ]


def test_lease_keeps_a_second_task_out(tmp_path: Path) -> None:
    path = tmp_path / "d.raw"
    with disks.open_disk(path, SMALL, RUNNER) as disk:
        assert disk.created
        with pytest.raises(LockHeldError) as caught:
            disks.lease(path).acquire()
        assert caught.value.message.startswith(
            f"disk {path} is in use: its lock {path}.lease is held by pid {os.getpid()} since "
        )
    with disks.open_disk(path, SMALL, RUNNER) as disk:
        assert not disk.created


ROOTLESS = r"""
import json, os, sys
from pathlib import Path
from agentbox_state.runner import SubprocessRunner
from agentbox_storage import disks
from agentbox_storage.errors import StorageError
spec = disks.DiskSpec(file_name="t.raw", label="AGENTBOX_TEST", block_id="t", purpose="test",
                      default_size=256 * 1024**2)
runner = SubprocessRunner(os.environ)
out = {}
p = Path("disk.raw")
out["created"] = disks.ensure_disk(p, spec, runner).created
out["reused"] = not disks.ensure_disk(p, spec, runner).created
out["grown"] = disks.grow_disk(p, 1024**3, runner)
u = disks.disk_usage(p, runner)
out["usage"] = [u.valid, u.label, u.apparent]
e = Path("empty.raw"); e.touch()
try:
    disks.ensure_disk(e, spec, runner)
except StorageError as err:
    out["refused"] = err.message
with disks.lease(p):
    try:
        disks.lease(p).acquire()
    except Exception as err:
        out["leased"] = type(err).__name__
out["reset"] = disks.reset_disk(p, spec, runner, force=True).created
out["owner"] = os.stat(p).st_uid == os.getuid()
print(json.dumps(out))
"""


@pytest.mark.root
def test_rootless(tmp_path: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="agentbox-disks-") as tmp:
        work = Path(tmp)
        work.chmod(0o777)
        done = run_as_user(ROOTLESS, packages=["agentbox_state", "agentbox_storage"], cwd=work)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
    assert out == {
        "created": True,
        "reused": True,
        "grown": [256 * MIB, GIB],
        "usage": [True, "AGENTBOX_TEST", GIB],
        "refused": "empty.raw is an empty file, not a btrfs disk image; refusing to format it",
        "leased": "LockHeldError",
        "reset": True,
        "owner": True,
    }
