"""The image cache fed by real Buildah images (agentbox-storage + agentbox-podman, wired by
loftd.ingest), as root and as an ordinary user in one `buildah unshare` transaction."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentbox_state.runner import SubprocessRunner
from agentbox_state.testing import RecordingRunner
from agentbox_storage.errors import StorageError
from agentbox_storage.imagecache import ImageCache
from agentbox_testing import require, require_root, run_as_user
from loftd.ingest import ingest_argv

pytestmark = [pytest.mark.root, pytest.mark.podman]

GUEST = "bin/agentbox-guest-init"
RUNNER = SubprocessRunner(os.environ)

BUILD_TINY = r"""
set -eu
root=$(mktemp -d)
mkdir -p "$root/usr/bin" "$root/etc"
ln -s usr/bin "$root/bin"
echo ID=tiny > "$root/etc/os-release"
if [ "$2" = with-guest ]; then
    printf '#!/bin/sh\necho guest\n' > "$root/usr/bin/agentbox-guest-init"
    chmod 755 "$root/usr/bin/agentbox-guest-init"
fi
c=$(buildah from scratch)
buildah copy --quiet "$c" "$root" / >/dev/null
buildah commit --quiet --rm "$c" "$1" >/dev/null
rm -rf "$root"
buildah inspect --type image --format '{{.FromImageDigest}}' "$1" >/dev/null 2>&1 || true
"""


def build_tiny(name: str, *, guest: bool = True) -> None:
    subprocess.run(["sh", "-c", BUILD_TINY, "build", name, "with-guest" if guest else "no-guest"],
                   check=True, capture_output=True)  # fmt: skip


def containers() -> list[str]:
    return subprocess.run(["buildah", "containers", "--quiet"], capture_output=True, text=True,
                          check=True).stdout.split()  # fmt: skip


@pytest.fixture(scope="module")
def tiny() -> Iterator[str]:
    require_root("rootful buildah storage")
    require(shutil.which("buildah") is not None, "buildah is missing (apt-get install buildah)")
    build_tiny("localhost/agentbox-tiny:test")
    build_tiny("localhost/agentbox-noguest:test", guest=False)
    yield "localhost/agentbox-tiny:test"
    images = ["localhost/agentbox-tiny:test", "localhost/agentbox-noguest:test"]
    subprocess.run(["buildah", "rmi", *images], check=False, capture_output=True)


def child(cache: Path) -> Callable[[str, str | None], list[str]]:
    return ingest_argv([], sys.executable, cache, GUEST)


def test_miss_then_hit_without_buildah(tmp_path: Path, tiny: str) -> None:
    before = containers()
    cache = ImageCache(tmp_path / "cache")
    entry, hit = cache.ensure(tiny, RUNNER, ingest_argv=child(cache.root))
    assert not hit
    assert cache.is_valid(entry.digest)
    assert (entry.rootfs / "etc" / "os-release").read_text() == "ID=tiny\n"
    assert os.access(entry.rootfs / "usr" / "bin" / "agentbox-guest-init", os.X_OK)
    assert cache.read_hint(tiny) == entry.digest
    assert containers() == before, "the working container must be removed"

    rec = RecordingRunner()
    assert cache.ensure(tiny, rec, ingest_argv=child(cache.root)) == (entry, True)
    name = tiny.rsplit(":", 1)[0]
    assert cache.ensure(f"{name}@{entry.digest}", rec, ingest_argv=child(cache.root)) == (
        entry,
        True,
    )
    assert rec.calls == [], "a hit runs nothing"


def test_debug_ingest_logs_buildah_at_debug_and_still_reads_its_digest(
    tmp_path: Path, tiny: str
) -> None:
    cache = ImageCache(tmp_path / "cache")
    argv = ingest_argv([], sys.executable, cache.root, GUEST, debug=True)(tiny, None)
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    echoed = [line for line in done.stderr.splitlines() if line.startswith("+ buildah ")]
    assert [line.split()[:4] for line in echoed] == [
        ["+", "buildah", "--log-level=debug", verb] for verb in ("from", "inspect", "mount",
                                                                  "umount", "rm")
    ], done.stderr  # fmt: skip
    assert cache.is_valid(done.stdout.strip())
    entry, hit = cache.ensure(tiny, RUNNER, ingest_argv=child(cache.root))
    assert (entry.digest, hit) == (done.stdout.strip(), False)  # the same digest without debug


def run_child(cache: Path, ref: str, expected: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loftd.ingest", ref, str(cache), expected, GUEST],
                          capture_output=True, text=True, check=False, timeout=300)  # fmt: skip


def test_pinned_digest_of_other_content_is_refused(tmp_path: Path, tiny: str) -> None:
    wrong = "sha256:" + "0" * 64
    done = run_child(tmp_path / "cache", tiny, wrong)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0].startswith(f"loftd ingest: image {tiny} has digest sha256:")
    assert lines[0].endswith(f", but the reference pins {wrong}; refusing to cache it")
    assert not (tmp_path / "cache" / "sha256" / ("0" * 64)).exists()


def test_image_without_guest_init_is_refused(tmp_path: Path, tiny: str) -> None:
    before = containers()
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(StorageError) as caught:
        cache.ensure("localhost/agentbox-noguest:test", RUNNER, ingest_argv=child(cache.root))
    assert (
        "image localhost/agentbox-noguest:test cannot boot: its guest init "
        "/bin/agentbox-guest-init is missing" in caught.value.message
    )
    assert cache.read_hint("localhost/agentbox-noguest:test") is None
    entries = [p for p in (cache.root / "sha256").iterdir() if not p.name.startswith(".")]
    assert entries == []
    assert containers() == before


def test_two_ingests_at_once(tmp_path: Path, tiny: str) -> None:
    cache = tmp_path / "cache"
    argv = [sys.executable, "-m", "loftd.ingest", tiny, str(cache), "", GUEST]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = []
    for proc in procs:
        with proc:
            out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outs.append(out)
    assert outs[0] == outs[1]
    digest = outs[0].strip()
    assert ImageCache(cache).is_valid(digest)
    names = sorted(p.name for p in (cache / "sha256").iterdir())
    assert names == [f".{digest[7:]}.lock", digest[7:]]


ROOTLESS = r"""
import json, os, subprocess, sys
from pathlib import Path
from agentbox_state.runner import SubprocessRunner
from agentbox_state.testing import RecordingRunner
from agentbox_storage.imagecache import ImageCache
from loftd.ingest import ingest_argv
subprocess.run(["sh", "-c", BUILD, "build", "localhost/agentbox-tiny:user", "with-guest"],
               check=True, capture_output=True)
cache = ImageCache(Path(CACHE))
from agentbox_podman.buildah import unshare
prefix = unshare("env", "PYTHONPATH=" + os.environ["PYTHONPATH"], debug=DEBUG)
argv = ingest_argv(prefix, sys.executable, cache.root, "bin/agentbox-guest-init", debug=DEBUG)
runner = SubprocessRunner(os.environ)
entry, hit = cache.ensure("localhost/agentbox-tiny:user", runner, ingest_argv=argv)
rec = RecordingRunner()
_, hit2 = cache.ensure("localhost/agentbox-tiny:user", rec, ingest_argv=argv)
release = str(entry.rootfs / "etc/os-release")
owner = subprocess.run(["buildah", "unshare", "stat", "-c", "%u", release],
                       capture_output=True, text=True, check=True).stdout.strip()
left = subprocess.run(["buildah", "containers", "--quiet"], capture_output=True, text=True).stdout
subprocess.run(["buildah", "rmi", "localhost/agentbox-tiny:user"], capture_output=True)
print(json.dumps({"hit": hit, "hit2": hit2, "calls": len(rec.calls),
                  "valid": cache.is_valid(entry.digest),
                  "guest": os.path.exists(entry.rootfs / "usr/bin/agentbox-guest-init"),
                  "owner_in_ns": owner, "containers": left.split()}))
"""


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_rootless_ingest_in_one_buildah_unshare(debug: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="agentbox-cache-") as tmp:
        os.chmod(tmp, 0o777)
        code = ROOTLESS.replace("BUILD", repr(BUILD_TINY)).replace("CACHE", repr(f"{tmp}/cache"))
        code = code.replace("DEBUG", repr(debug))
        done = run_as_user(code, packages=["agentbox_state", "agentbox_storage",
                                           "agentbox_podman", "loftd"], cwd=tmp)  # fmt: skip
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        subprocess.run(["rm", "-rf", f"{tmp}/cache"], check=True)
    assert out == {"hit": False, "hit2": True, "calls": 0, "valid": True, "guest": True,
                   "owner_in_ns": "0", "containers": []}  # fmt: skip
