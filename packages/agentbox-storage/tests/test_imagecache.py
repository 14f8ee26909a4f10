"""The image cache with an in-process image source (a plain directory); the cross-package test
with real Buildah images is in the top-level tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentbox_state.runner import SubprocessRunner
from agentbox_state.testing import RecordingRunner
from agentbox_storage import imagecache
from agentbox_storage.errors import StorageError
from agentbox_storage.imagecache import ImageCache
from agentbox_testing import require_root

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
RUNNER = SubprocessRunner(os.environ)
GUEST = "bin/agentbox-guest-init"


@dataclass(frozen=True)
class Opened:
    digest: str
    rootfs: Path


class DirSource:
    """An ImageSource over a plain directory: what buildah mount would give."""

    def __init__(self, rootfs: Path, digest: str) -> None:
        self.rootfs, self.digest, self.opened = rootfs, digest, 0

    @contextmanager
    def open(self, ref: str) -> Iterator[Opened]:
        self.opened += 1
        yield Opened(self.digest, self.rootfs)


@pytest.fixture
def image(tmp_path: Path, make_rootfs: object) -> Path:
    return make_rootfs(tmp_path / "image", subvolume=False)  # type: ignore[operator,no-any-return]


@pytest.mark.parametrize(
    "text",
    ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "md5:" + "a" * 32, "sha256", "", "a" * 64,
     "sha256:" + "a" * 63 + "/", "sha256:../" + "a" * 61],
)  # fmt: skip
def test_malformed_digests_are_refused(text: str) -> None:
    with pytest.raises(StorageError, match="invalid image digest"):
        imagecache.parse_digest(text)


def test_digest_and_reference_helpers() -> None:
    assert imagecache.parse_digest(D1) == ("sha256", "a" * 64)
    assert imagecache.pinned_digest(f"localhost/x@{D1}") == D1
    assert imagecache.pinned_digest("localhost:5000/x:tag") is None
    with pytest.raises(StorageError):
        imagecache.pinned_digest("x@sha256:nothex")
    assert (
        imagecache.encode_ref("localhost:5000/a_b/c:v1.2-x")
        == "localhost%3A5000%2Fa_b%2Fc%3Av1.2-x"
    )
    assert imagecache.encode_ref("ü") == "%C3%BC"


def test_ingest_publishes_a_complete_entry(tmp_path: Path, image: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    source = DirSource(image, D1)
    entry = cache.ingest("localhost/x:1", source, RUNNER, guest_init=GUEST)
    assert entry == imagecache.CacheEntry(D1, tmp_path / "cache" / "sha256" / ("a" * 64))
    assert cache.is_valid(D1)
    assert (entry.path / "agentbox-compatible").read_text() == "agentbox image cache 1\n"
    assert (entry.rootfs / "etc" / "os-release").read_text() == "ID=test\n"
    assert (entry.rootfs / "bin").is_symlink()
    assert sorted(p.name for p in entry.path.parent.iterdir()) == [
        "." + "a" * 64 + ".lock",
        "a" * 64,
    ]
    again = cache.ingest("localhost/x:1", source, RUNNER, guest_init=GUEST)
    assert again == entry  # found, not rebuilt


def test_pinned_digest_mismatch_is_refused(tmp_path: Path, image: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(StorageError) as caught:
        cache.ingest(f"x@{D2}", DirSource(image, D1), RUNNER, guest_init=GUEST, expected=D2)
    assert caught.value.message == (
        f"image x@{D2} has digest {D1}, but the reference pins {D2}; refusing to cache it"
    )
    assert not cache.is_valid(D1)
    assert not (tmp_path / "cache" / "sha256" / ("a" * 64)).exists()


def test_image_without_guest_init_leaves_nothing(tmp_path: Path, image: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    (image / "usr" / "bin" / "agentbox-guest-init").unlink()
    with pytest.raises(StorageError, match="its guest init /bin/agentbox-guest-init is missing"):
        cache.ingest("x:1", DirSource(image, D1), RUNNER, guest_init=GUEST)
    assert [p.name for p in (tmp_path / "cache" / "sha256").iterdir()] == ["." + "a" * 64 + ".lock"]


def test_ensure_hits_without_running_anything(tmp_path: Path, image: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    cache.ingest("x:1", DirSource(image, D1), RUNNER, guest_init=GUEST)
    rec = RecordingRunner()
    assert cache.ensure(f"x@{D1}", rec, ingest_argv=lambda r, e: ["false"]) == (
        cache.entry(D1),
        True,
    )
    cache.write_hint("x:1", D1)
    assert cache.ensure("x:1", rec, ingest_argv=lambda r, e: ["false"]) == (cache.entry(D1), True)
    assert rec.calls == []
    assert (tmp_path / "cache" / "refs" / "x%3A1").read_text() == D1 + "\n"


def test_lookup_by_what_local_storage_has_now(tmp_path: Path, image: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    cache.ingest("x:1", DirSource(image, D1), RUNNER, guest_init=GUEST)
    cache.write_hint("x:1", D1)
    other = "sha256:" + "b" * 64
    assert cache.lookup("x:1", current=other) is None  # x:1 was rebuilt: a miss, not the old one
    assert cache.lookup("x:1", current=None) == cache.entry(D1)  # gone from storage: the hint
    cache.write_hint("y:2", other)  # a stale hint is corrected by what storage says
    assert cache.lookup("y:2", current=D1) == cache.entry(D1)
    assert cache.read_hint("y:2") == D1
    rec = RecordingRunner()
    rec.script("ingest", stdout=D1 + "\n")
    assert cache.ensure("x:1", rec, ingest_argv=lambda r, e: ["ingest"], look=False) == (
        cache.entry(D1), False,
    )  # fmt: skip
    assert rec.argvs == [["ingest"]]  # without look, the child runs even on a cached tag


def test_ensure_miss_runs_the_child_and_records_the_hint(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    rec = RecordingRunner()
    entry = cache.entry(D1)
    entry.rootfs.mkdir(parents=True)  # what the child would have published
    (entry.path / "agentbox-compatible").write_text("agentbox image cache 1\n")
    rec.script("ingest", stdout=f"noise\n{D1}\n")
    cache.write_hint("x:1", D2)  # a stale hint: its entry does not exist
    got = cache.ensure("x:1", rec, ingest_argv=lambda ref, exp: ["ingest", ref, exp or "-"])
    assert got == (entry, False)
    assert rec.argvs == [["ingest", "x:1", "-"]]
    assert cache.read_hint("x:1") == D1


def test_ensure_reports_the_child_failure(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    rec = RecordingRunner()
    rec.script("ingest", returncode=1, stderr="loftd ingest: image x:1 cannot boot\nhint: build\n")
    with pytest.raises(StorageError) as caught:
        cache.ensure("x:1", rec, ingest_argv=lambda ref, exp: ["ingest"])
    assert caught.value.message == (
        "could not add image x:1 to the image cache:\n  loftd ingest: image x:1 cannot boot"
    )
    assert caught.value.hint == "build"  # the child's advice, not a second "hint:" line
    assert cache.read_hint("x:1") is None


def test_marker_decides_validity(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    entry = cache.entry(D1)
    entry.rootfs.mkdir(parents=True)
    assert not cache.is_valid(D1)
    (entry.path / "agentbox-compatible").write_text("something else\n")
    assert not cache.is_valid(D1)
    (entry.path / "agentbox-compatible").write_text("agentbox image cache 1\n")
    assert cache.is_valid(D1)


CRASHER = """
import os, signal, sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from agentbox_state.runner import SubprocessRunner
from agentbox_storage.imagecache import ImageCache

@dataclass(frozen=True)
class Opened:
    digest: str
    rootfs: Path

class Source:
    @contextmanager
    def open(self, ref):
        yield Opened(sys.argv[3], Path(sys.argv[2]))

class DieMidCopy(SubprocessRunner):
    def run(self, argv, **kw):
        if argv[0] == "cp" and sys.argv[4] == "die":
            result = super().run(argv, **kw)  # half done: the copy exists, no marker yet
            os.kill(os.getpid(), signal.SIGKILL)
        return super().run(argv, **kw)

cache = ImageCache(Path(sys.argv[1]))
entry = cache.ingest("x:1", Source(), DieMidCopy(os.environ), guest_init="bin/agentbox-guest-init")
print(entry.digest)
"""


def _child(cache: Path, image: Path, digest: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CRASHER, str(cache), str(image), digest, mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_killed_ingest_leaves_nothing_valid_and_is_cleaned(tmp_path: Path, image: Path) -> None:
    cache_root = tmp_path / "cache"
    with _child(cache_root, image, D1, "die") as killed:
        killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL
    leftovers = [p.name for p in (cache_root / "sha256").iterdir() if ".partial-" in p.name]
    assert len(leftovers) == 1
    cache = ImageCache(cache_root)
    assert not cache.is_valid(D1)
    assert cache.lookup(f"x@{D1}") is None
    with _child(cache_root, image, D1, "live") as ok:
        out, err = ok.communicate(timeout=120)
    assert (ok.returncode, out) == (0, D1 + "\n"), err
    assert cache.is_valid(D1)
    assert not [p for p in (cache_root / "sha256").iterdir() if ".partial-" in p.name]


def test_two_ingests_of_one_digest_both_succeed(tmp_path: Path, image: Path) -> None:
    cache_root = tmp_path / "cache"
    children = [_child(cache_root, image, D1, "live") for _ in range(2)]
    results = []
    for child in children:
        with child:
            results.append(child.communicate(timeout=120))
        assert child.returncode == 0, results[-1][1]
    assert [out for out, _ in results] == [D1 + "\n", D1 + "\n"]
    assert sorted(p.name for p in (cache_root / "sha256").iterdir()) == [
        "." + "a" * 64 + ".lock",
        "a" * 64,
    ]
    assert ImageCache(cache_root).is_valid(D1)


@pytest.mark.root
@pytest.mark.btrfs
def test_cache_on_btrfs_uses_a_subvolume(btrfs: Path, image: Path) -> None:
    require_root("btrfs loop mount")
    from agentbox_storage.taskroot import is_subvolume

    cache = ImageCache(Path(tempfile.mkdtemp(dir=btrfs)) / "cache")
    entry = cache.ingest("x:1", DirSource(image, D1), RUNNER, guest_init=GUEST)
    assert is_subvolume(entry.rootfs)
    assert json.dumps(sorted(os.listdir(entry.rootfs))) == json.dumps(sorted(os.listdir(image)))


def test_entries_hints_and_removal_for_gc(tmp_path: Path, image: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    for digest in (D1, D2):
        cache.ingest(f"img@{digest}", DirSource(image, digest), RUNNER, guest_init=GUEST,
                     expected=digest)  # fmt: skip
    cache.write_hint("localhost/agentbox:latest", D2)
    cache.write_hint("ü:1", D2)
    staging = cache.root / "sha256" / f".{'c' * 64}.partial-1-2"
    staging.mkdir()
    assert [e.digest for e in cache.entries()] == [D1, D2]  # staging and lock files are none
    assert cache.hints() == {D2: ["ü:1", "localhost/agentbox:latest"]}  # by file name
    held = cache.digest_lock("sha256:" + "c" * 64)
    held.acquire()
    try:  # a live ingest's staging is neither listed nor removed
        assert cache.clean_staging(RUNNER, dry_run=True) == []
    finally:
        held.release()
    assert cache.clean_staging(RUNNER, dry_run=True) == [staging]
    assert staging.is_dir()
    recorder = RecordingRunner()
    cache.remove_entry(D1, recorder, userns=("buildah", "unshare"))
    assert [a[:2] for a in recorder.argvs] == [["buildah", "unshare"]]
    cache.remove_entry(D1, RUNNER)
    assert [e.digest for e in cache.entries()] == [D2]
    assert cache.clean_staging(RUNNER) == [staging]
