"""Snapshot primitives against a real loop-mounted btrfs (root) and a filesystem that cannot
reflink; the manifest against real files. cp(1) of coreutils: ``--reflink=always`` performs a
lightweight copy "where the data blocks are copied only when modified. If this is not possible
the copy fails"; cp 9.1 rejects ``--sparse`` other than auto with it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from agentbox_state.recordfile import RecordFileError
from agentbox_state.runner import SubprocessRunner
from agentbox_storage import snapshot
from agentbox_storage.errors import StorageError
from agentbox_storage.snapshot import DIR, FILE, Item, Manifest
from agentbox_testing import require, require_root

RUNNER = SubprocessRunner(os.environ)
GIB = 1024**3


def digest(path: Path) -> str:
    """A digest of the content (size and every 1 MiB chunk that is not all zeros, with its
    offset) that reads only where the file has data (lseek(2) SEEK_DATA/SEEK_HOLE): the same
    for equal content whatever the hole layout, and quick on a 64 GiB sparse disk."""
    chunk_size = 1 << 20
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    seen: set[int] = set()
    with open(path, "rb") as f:
        fd, offset = f.fileno(), 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            for at in range(start - start % chunk_size, end, chunk_size):
                if at in seen:
                    continue
                seen.add(at)
                f.seek(at)
                chunk = f.read(chunk_size)
                if chunk.count(0) != len(chunk):
                    h.update(at.to_bytes(8, "big") + chunk)
            offset = end
    return h.hexdigest()


def sparse_disk(path: Path, data: bytes, *, size: int = 64 * GIB) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(size // 2)
        f.write(data)


def test_argv_is_pure() -> None:
    assert snapshot.reflink_copy(Path("/s/a.raw"), Path("/d/a.raw"), ["buildah", "unshare"]) == [
        "buildah", "unshare", "cp", "-a", "--reflink=always", "--no-target-directory",
        "/s/a.raw", "/d/a.raw",
    ]  # fmt: skip
    assert snapshot.full_copy(Path("/s/up"), Path("/d/up")) == [
        "cp", "-a", "--reflink=never", "--sparse=always", "--no-target-directory", "/s/up", "/d/up",
    ]  # fmt: skip


def test_cp_refuses_sparse_always_with_reflink_always(tmp_path: Path) -> None:
    """Why reflink_copy passes no --sparse: the real cp refuses the pair before copying."""
    (tmp_path / "a").write_bytes(b"x")
    out = subprocess.run(["cp", "--reflink=always", "--sparse=always", tmp_path / "a",
                          tmp_path / "b"], capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 1
    assert "--reflink can be used only with --sparse=auto" in out.stderr


MANIFEST = Manifest(created=1.5e9, agentbox="0.9.0", image="sha256:abc", items=(
    Item(path="microvm-nix.raw", kind=FILE, size=4, allocated=4096),
    Item(path="nix/upper", kind=DIR, size=3, allocated=0),
))  # fmt: skip


def _taken(tmp_path: Path) -> Path:
    snap = tmp_path / "snap"
    (snap / "nix" / "upper").mkdir(parents=True)
    (snap / "nix" / "upper" / "f").write_bytes(b"abc")
    (snap / "microvm-nix.raw").write_bytes(b"disk")
    snapshot.write_manifest(snap, MANIFEST)
    return snap


def test_manifest_round_trip_and_validates(tmp_path: Path) -> None:
    snap = _taken(tmp_path)
    assert snapshot.read_manifest(snap) == MANIFEST
    assert snapshot.problems(snap, MANIFEST) == []
    assert snapshot.measure(snap / "nix" / "upper")[:2] == (DIR, 3)
    assert snapshot.measure(snap / "microvm-nix.raw")[:2] == (FILE, 4)


def test_changed_or_missing_items_are_problems(tmp_path: Path) -> None:
    snap = _taken(tmp_path)
    (snap / "microvm-nix.raw").write_bytes(b"longer")
    (snap / "nix" / "upper" / "f").unlink()
    (snap / "nix" / "upper").rmdir()
    assert snapshot.problems(snap, MANIFEST) == [
        "microvm-nix.raw is 6 bytes, the manifest says 4",
        "nix/upper is missing",
    ]


@pytest.mark.parametrize(("text", "reason"), [
    (b"", "is empty"),
    (b"{not json\n", "is not JSON"),
    (b'{"format": "agentbox-snapshot/1", "created": 1.0, "agentbox": "x", "image": "",'
     b' "items": 2}\n{"path": "a", "kind": "file", "size": 1, "allocated": 0}\n', "names 2 item"),
    (b'{"format": "agentbox-snapshot/1", "created": 1.0, "agentbox": "x", "image": "",'
     b' "items": 1}\n{"path": "../x", "kind": "file", "size": 1, "allocated": 0}\n',
     "lists the item '../x'"),
    (b'{"format": "other/2", "created": 1.0, "agentbox": "x", "image": "", "items": 0}\n',
     "has the format 'other/2'"),
    (b'{"format": "agentbox-snapshot/1", "created": "now", "agentbox": "x", "image": "",'
     b' "items": 0}\n', "has 'created' as a string"),
], ids=["empty", "not-json", "count", "escaping-path", "format", "type"])  # fmt: skip
def test_a_damaged_manifest_is_refused(tmp_path: Path, text: bytes, reason: str) -> None:
    (tmp_path / snapshot.MANIFEST).write_bytes(text)
    with pytest.raises(RecordFileError) as info:
        snapshot.read_manifest(tmp_path)
    assert reason in info.value.message
    assert info.value.hint == "this snapshot is damaged: agentbox snapshot delete removes it"


def test_a_missing_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecordFileError, match="cannot read the snapshot manifest"):
        snapshot.read_manifest(tmp_path)


def test_no_reflink_refuses_and_leaves_nothing_but_copy_copies(tmp_path: Path) -> None:
    require(
        not snapshot.can_reflink(tmp_path, RUNNER),
        f"{tmp_path} can reflink: this test needs a filesystem that cannot (ext4, tmpfs)",
    )
    disk = tmp_path / "d.raw"
    sparse_disk(disk, b"data" * 1024, size=GIB)
    with pytest.raises(StorageError, match=r"cannot reflink .*d\.raw") as info:
        snapshot.copy_item(disk, tmp_path / "copy.raw", RUNNER)
    assert info.value.hint is not None
    assert "--copy" in info.value.hint
    assert not (tmp_path / "copy.raw").exists()
    assert snapshot.copy_item(disk, tmp_path / "copy.raw", RUNNER, copy=True) == "copy"
    assert digest(tmp_path / "copy.raw") == digest(disk)
    assert (tmp_path / "copy.raw").stat().st_blocks * 512 < 1024**2  # the holes stayed holes
    assert sorted(os.listdir(tmp_path)) == ["copy.raw", "d.raw"]  # the probe left nothing


@pytest.fixture
def work(btrfs: Path) -> Path:
    require_root("btrfs subvolumes on a loop mount")
    return Path(tempfile.mkdtemp(dir=btrfs))


@pytest.mark.root
@pytest.mark.btrfs
def test_a_sparse_disk_is_cloned_sharing_its_blocks(work: Path) -> None:
    assert snapshot.can_reflink(work, RUNNER)
    disk = work / "microvm-nix.raw"
    sparse_disk(disk, os.urandom(8 * 1024**2))
    before = digest(disk)
    assert snapshot.copy_item(disk, work / "snap.raw", RUNNER) == "reflink"
    clone = work / "snap.raw"
    assert clone.stat().st_size == 64 * GIB
    assert clone.stat().st_blocks * 512 <= 16 * 1024**2  # holes stayed holes
    with open(disk, "r+b") as f:  # the source changes; the clone does not
        f.seek(32 * GIB)
        f.write(b"changed")
    assert digest(clone) == before
    assert digest(disk) != before


@pytest.mark.root
@pytest.mark.btrfs
def test_a_subvolume_is_snapshotted_and_a_plain_dir_reflinked(work: Path) -> None:
    sub, plain = work / "upper-sub", work / "upper-plain"
    subprocess.run(["btrfs", "subvolume", "create", sub], check=True, capture_output=True)
    plain.mkdir()
    for d in (sub, plain):
        (d / "store").mkdir()
        (d / "store" / "f").write_bytes(b"contents")
        os.symlink("store/f", d / "link")
    assert snapshot.is_subvolume(sub)
    assert not snapshot.is_subvolume(plain)
    assert snapshot.copy_item(sub, work / "s1", RUNNER) == "subvolume-snapshot"
    assert snapshot.is_subvolume(work / "s1")
    assert snapshot.copy_item(plain, work / "s2", RUNNER) == "reflink"
    for copy in (work / "s1", work / "s2"):
        assert (copy / "store" / "f").read_bytes() == b"contents"
        assert os.readlink(copy / "link") == "store/f"
    snapshot.remove_item(work / "s1", RUNNER)
    snapshot.remove_item(work / "s2", RUNNER)
    assert not (work / "s1").exists()
    assert not (work / "s2").exists()
    with pytest.raises(StorageError, match="exists"):
        snapshot.copy_item(plain, sub, RUNNER)


def test_fiemap_layout_and_what_shares_nothing(tmp_path: Path) -> None:
    """The ioctl's structs as Documentation/filesystems/fiemap.rst lays them out (a 32-byte
    struct fiemap, 56-byte struct fiemap_extent); a file just written shares nothing, and a
    symlink, a fifo or a missing path is not read."""
    from agentbox_storage import extents

    assert (extents._HEAD.size, extents._EXTENT.size) == (32, 56)
    assert (3 << 30) | (32 << 16) | (ord("f") << 8) | 11 == extents.FS_IOC_FIEMAP  # _IOWR
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(os.urandom(100_000))
    os.symlink("/etc/passwd", tmp_path / "d" / "link")  # not followed
    os.mkfifo(tmp_path / "d" / "fifo")  # not a regular file: not opened
    assert extents.shared_bytes(tmp_path) == 0
    assert extents.shared_bytes(tmp_path / "missing") == 0


@pytest.mark.root
@pytest.mark.btrfs
def test_shared_extents_are_counted_until_either_side_writes(work: Path) -> None:
    """FIEMAP's shared extents of a reflink copy and of a subvolume snapshot: all of the data
    right after the copy, less what is rewritten after (the copy-on-write unshares it)."""
    from agentbox_storage.extents import shared_bytes

    data = os.urandom(4 * 1024**2)
    disk = work / "microvm-nix.raw"
    sparse_disk(disk, data)
    os.sync()  # delayed allocation: the extents are on disk, not pending
    assert shared_bytes(disk) == 0
    snapshot.copy_item(disk, work / "fork.raw", RUNNER)
    assert shared_bytes(work / "fork.raw") == shared_bytes(disk) == len(data)
    with open(work / "fork.raw", "r+b") as f:
        f.seek(32 * GIB)
        f.write(os.urandom(1024**2))  # over the first MiB of the data
    os.sync()
    assert shared_bytes(work / "fork.raw") == len(data) - 1024**2
    sub = work / "upper"
    subprocess.run(["btrfs", "subvolume", "create", sub], check=True, capture_output=True)
    (sub / "store").mkdir()
    (sub / "store" / "big").write_bytes(data)
    os.sync()
    snapshot.copy_item(sub, work / "upper-fork", RUNNER)
    assert shared_bytes(work / "upper-fork") == len(data)
    # the tree: each of the four files still shares (btrfs reports the source's whole extent
    # shared while the fork uses part of it)
    assert shared_bytes(work) >= 4 * len(data) - 1024**2
    snapshot.remove_item(work / "upper-fork", RUNNER)
