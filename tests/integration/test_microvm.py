"""`agentbox microvm` through the whole host pipeline for real (Buildah ingest of a locally
built image, a task root, real raw disks, a real launch.conf, the helper process, cleanup),
with a stub libkrun compiled from C standing in for the VM."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox_state.testing import require, require_root
from agentbox_state.workspace import Workspace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conftest import Home

ROOT = Path(__file__).resolve().parents[2]
STUB = ROOT / "packages" / "agentbox-krun" / "tests" / "stub" / "libkrun_stub.c"
TINY = "localhost/agentbox-tiny:microvm"


@pytest.fixture(scope="module")
def tiny_image() -> Iterator[str]:
    require_root("rootful buildah storage")
    script = (Path(__file__).parent / "test_image_cache.py").read_text()
    build = script.split('BUILD_TINY = r"""', 1)[1].split('"""', 1)[0]
    subprocess.run(["sh", "-c", build, "build", TINY, "with-guest"], check=True,
                   capture_output=True)  # fmt: skip
    yield TINY
    subprocess.run(["buildah", "rmi", TINY], check=False, capture_output=True)


def stub(tmp_path: Path, log: Path, status: int) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    require(cc is not None, "a C compiler is missing (apt-get install gcc)")
    assert cc is not None
    out = tmp_path / "libkrun_stub.so"
    subprocess.run([cc, "-shared", "-fPIC", f'-DSTUB_LOG="{log}"', f'-DSTUB_EXIT="{status}"',
                    "-o", str(out), str(STUB)], check=True)  # fmt: skip
    return out


def tasks_dir(home: Home) -> Path:
    key = Workspace.from_path(home.project).key
    return home.home / ".local/state/agentbox/workspaces" / key / "tasks"


def test_full_pipeline_with_the_stub(home: Home, agentbox: Path, tiny_image: str,
                                     tmp_path: Path) -> None:  # fmt: skip
    log = tmp_path / "calls.log"
    lib = stub(tmp_path, log, 42)
    out = home.run(agentbox, "--image", tiny_image, "microvm", "--", "echo", "hi",
                   AGENTBOX_LIBKRUN_LIBRARY=str(lib))  # fmt: skip
    assert out.returncode == 42, out.stderr
    calls = log.read_text().splitlines()
    state = tasks_dir(home).parent
    assert calls[:3] == ["krun_set_log_level 0", "krun_create_ctx", "krun_set_vm_config 7 "
                         f"{min(os.cpu_count() or 1, 6)} 4096"]  # fmt: skip
    assert calls[3].startswith(f"krun_set_root 7 {state}/tasks/project-")
    assert calls[3].endswith("/rootfs-fuse-overlay")  # /tmp is not btrfs: auto chose the overlay
    assert calls[4:6] == [
        f"krun_add_disk 7 agentbox-nix {state}/microvm-nix.raw 0",
        f"krun_add_disk 7 agentbox-containers {state}/microvm-containers.raw 0",
    ]
    assert f"krun_add_virtiofs3 7 agentbox-workspace {home.project} 0 0" in calls
    assert "krun_set_exec 7 /usr/bin/agentbox-guest-init" in calls
    assert calls[-1] == "krun_start_enter 7"
    argv = [c.split("=", 1)[1] for c in calls if c.startswith("  argv[")]
    assert argv == ["agentbox-guest-init", "microvm", "enter", "--", "echo", "hi"]
    assert list(tasks_dir(home).iterdir()) == [], "the task root and state must be gone"
    for disk in ("microvm-nix.raw", "microvm-containers.raw"):
        blkid = ["blkid", "-p", "-o", "value", "-s", "TYPE", str(state / disk)]
        label = subprocess.run(blkid, capture_output=True, text=True, check=True).stdout.strip()
        assert label == "btrfs"


def test_preserve_debug_keeps_and_explains(home: Home, agentbox: Path, tiny_image: str,
                                           tmp_path: Path) -> None:  # fmt: skip
    lib = stub(tmp_path, tmp_path / "calls.log", 0)
    out = home.run(agentbox, "--image", tiny_image, "microvm", "--preserve-debug", "--", "true",
                   AGENTBOX_LIBKRUN_LIBRARY=str(lib))  # fmt: skip
    assert out.returncode == 0, out.stderr
    kept = list(tasks_dir(home).iterdir())
    assert len(kept) == 1
    assert (kept[0] / "launch.conf").exists()
    commands = out.stderr.split("remove it with:\n", 1)[1].splitlines()
    for line in commands:
        subprocess.run(["sh", "-c", line.strip()], check=True, capture_output=True)
    assert list(tasks_dir(home).iterdir()) == []


def test_without_libkrun_nothing_is_created(home: Home, agentbox: Path, tree: object) -> None:
    before = tree(home.root)  # type: ignore[operator]
    out = home.run(agentbox, "microvm", "--", "true",
                   AGENTBOX_LIBKRUN_LIBRARY=str(home.root / "no-libkrun.so"))  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("agentbox: agentbox microvm needs libkrun: cannot load libkrun;")
    assert "install libkrun and libkrunfw" in out.stderr
    assert tree(home.root) == before  # type: ignore[operator]
    pulled = home.run(agentbox, "--pull-latest", "microvm", "--", "true")
    assert pulled.returncode == 2
    assert "--pull-latest microvm is not supported" in pulled.stderr


@pytest.fixture(scope="module")
def loftd_image(tiny_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny image with loftd's name for the same guest init, as the agentbox image has."""
    links = tmp_path_factory.mktemp("links")
    (links / "loftd-guest-init").symlink_to("agentbox-guest-init")
    name = "localhost/loftd-tiny:microvm"
    c = subprocess.run(["buildah", "from", "--pull=never", "--quiet", tiny_image],
                       capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    subprocess.run(["buildah", "copy", "--quiet", c, f"{links}/", "/usr/bin/"], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run(["buildah", "commit", "--quiet", "--rm", c, name], check=True,
                   capture_output=True)  # fmt: skip
    yield name
    subprocess.run(["buildah", "rmi", name], check=False, capture_output=True)


def test_loftd_runs_the_same_pipeline_with_its_contract(
    home: Home, loftd: Path, loftd_image: str, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    lib = stub(tmp_path, log, 3)
    cfg = home.config("loftd", '[task-rootfs]\nbackend = "btrfs-snapshot"\n')
    refused = home.run(loftd, "--rootfs-backend", "btrfs", "--", "true")
    assert refused.returncode == 1
    assert "say btrfs-snapshot" in refused.stderr
    out = home.run(loftd, "--image", loftd_image, "--rootfs-backend", "fuse-overlay", "--", "id",
                   LOFTD_LIBKRUN_LIBRARY=str(lib))  # fmt: skip
    assert out.returncode == 3, out.stderr
    calls = log.read_text().splitlines()
    state = home.home / ".local/state/loftd/workspaces" / Workspace.from_path(home.project).key
    assert calls[3].startswith(f"krun_set_root 7 {state}/tasks/project-")
    assert calls[3].endswith("/rootfs-fuse-overlay")  # the flag overrode the config file
    assert f"krun_add_disk 7 loftd-containers {state}/loftd-containers.raw 0" in calls
    argv = [c.split("=", 1)[1] for c in calls if c.startswith("  argv[")]
    assert argv == ["loftd-guest-init", "enter", "--", "id"]
    env = [c.split("=", 1)[1] for c in calls if c.startswith("  env[")]
    assert "LOFTD_WORKSPACE_TAG=loftd-workspace" in env
    assert not [e for e in env if e.startswith("AGENTBOX_")]
    assert list((state / "tasks").iterdir()) == []
    assert cfg.exists()
