"""`agentbox gc`, `disks` and `forget` on leftovers made for real: a microvm run (the stub
libkrun standing in for the VM) killed with SIGKILL mid-run, as root; a container task killed
with SIGKILL of its agentbox process group mid-run, as the ordinary test user. `gc --dry-run`
lists exactly them, `gc` removes them, a second `gc --dry-run` finds nothing; `disks --json`
validates and shows the sparse disks; `forget` without --force changes nothing."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentbox_state.workspace import Workspace
from agentbox_testing import btrfs_loop, require, require_root, require_test_user
from agentbox_testing.schemas import load_schema, problems
from agentbox_testing.stubvm import lingering_stub, start_lingering
from loftd.guest import STATUS_PATH

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conftest import Home, UserBox

ROOT = Path(__file__).resolve().parents[2]
STUB = ROOT / "packages" / "agentbox-krun" / "tests" / "stub" / "libkrun_stub.c"
TINY = "localhost/agentbox-tiny:keep"
BUILD = Path(__file__).with_name("tiny-image.sh").read_text()


def listing(root: Path) -> list[tuple[str, int, float]]:
    """Every path under ``root`` with its size and mtime (not descending into mounts)."""
    found = []
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.ismount(os.path.join(top, d))]
        for name in [*dirs, *files]:
            st = os.lstat(os.path.join(top, name))
            found.append((os.path.relpath(os.path.join(top, name), root), st.st_size,
                          st.st_mtime))  # fmt: skip
    return sorted(found)


def records(state: Path) -> list[str]:
    """The lock and lease files of ``state`` holding a holder record (a holder that lets go
    truncates it), outside task dirs: after a SIGKILL, the stale ones."""
    return sorted(os.fspath(p) for p in [*state.glob("*.lease"), *state.glob("locks/*.lock"),
                                         *state.glob("*/lease")] if p.stat().st_size)  # fmt: skip


def items(out: subprocess.CompletedProcess[str]) -> list[tuple[str, str]]:
    """(kind, path) of each item `gc` lists, after checking the total line."""
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    listed = [line for line in lines[:-1] if not line.startswith("kept: ")]
    if listed:
        assert lines[-1].startswith(f"{len(listed)} item(s); ")
    else:
        assert lines[-1] == "nothing to remove"
    return [(line.split(" ", 1)[0], line.split(" ", 1)[1].split(": ", 1)[0]) for line in listed]


# ---- microvm (root) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_image() -> Iterator[str]:
    require_root("rootful buildah storage")
    require(shutil.which("buildah") is not None, "buildah is missing (apt-get install buildah)")
    subprocess.run(["sh", "-c", BUILD, "build", TINY], check=True, capture_output=True)
    yield TINY
    subprocess.run(["buildah", "rmi", TINY], check=False, capture_output=True)


def lingering_vm(home: Home, agentbox: Path, image: str, where: Path) -> subprocess.Popen[bytes]:
    """`agentbox microvm` on fuse-overlay whose stub "VM" stays up; returns once it is up."""
    lib, up = lingering_stub(STUB, where)
    return start_lingering(
        [str(agentbox), "--image", image, "microvm", "--storage", "fuse-overlay", "--", "true"],
        cwd=home.project, up=up, stderr=subprocess.DEVNULL,
        env={**home.env, "AGENTBOX_LIBKRUN_LIBRARY": str(lib), "AGENTBOX_SKIP_KVM_CHECK": "1"},
    )  # fmt: skip


@pytest.mark.root
@pytest.mark.podman
@pytest.mark.btrfs
@pytest.mark.libkrun
def test_gc_after_kill_9_of_a_microvm_run(home: Home, agentbox: Path, tiny_image: str,
                                          tmp_path: Path) -> None:  # fmt: skip
    state = home.home / ".local/state/agentbox/workspaces" / Workspace.from_path(home.project).key
    run = lingering_vm(home, agentbox, tiny_image, tmp_path / "stub")
    try:
        (task,) = (state / "tasks").iterdir()
        refused = home.run(agentbox, "forget", "--force")  # its task runs: refused, by name
        assert refused.returncode == 1
        assert "refusing to forget" in refused.stderr
        assert f"task {task.name} runs" in refused.stderr
        os.killpg(run.pid, signal.SIGKILL)  # the command line and its VM helper, mid-run
        run.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
    time.sleep(0.2)
    mount = task / "rootfs-fuse-overlay"
    assert os.path.ismount(mount)  # left mounted by the killed run
    young = home.run(agentbox, "gc", "--dry-run")  # a task dir this young may be starting
    assert (TASK_ROOT, os.fspath(task)) not in items(young)
    assert f"kept: task root {task} (changed in the last minute" in young.stdout
    hour_ago = time.time() - 3600
    os.utime(task, (hour_ago, hour_ago))

    stale = records(state)
    assert stale, "the killed helper held its disks' leases"
    before = listing(home.home)
    dry = home.run(agentbox, "gc", "--dry-run")
    assert items(dry) == [(TASK_ROOT, os.fspath(task))] + [("stale-lease", p) for p in stale], (
        dry.stdout
    )
    assert "would free " in dry.stdout.splitlines()[-1]
    assert listing(home.home) == before  # a dry run changes nothing

    report = home.run(agentbox, "disks", "--json")
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    assert problems(doc, load_schema("agentbox_cli.keep")) == []
    (project,) = doc["projects"]
    disks = {Path(i["path"]).name: i for i in project["items"] if i["kind"] == "disk"}
    assert sorted(disks) == ["microvm-containers.raw", "microvm-nix.raw"]
    for disk in disks.values():
        assert disk["valid"] is True
        assert disk["apparent"] > disk["allocated"] > 0  # sparse btrfs images
        assert disk["leased_by"] is None  # its holder is gone
    assert doc["image_cache"]["entries"] == 1

    done = home.run(agentbox, "gc")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"removed {dry.stdout.splitlines()[0]}"
    assert not task.exists()
    assert not os.path.ismount(mount)
    assert records(state) == []
    assert sorted(p.name for p in state.glob("*.raw")) == sorted(disks)  # disks are never gc'd
    again = home.run(agentbox, "gc", "--dry-run")
    assert (again.returncode, again.stdout) == (0, "nothing to remove\n")

    before = listing(home.home)
    kept = home.run(agentbox, "forget")
    assert kept.returncode == 1
    assert kept.stderr.endswith("hint: add --force if that is what you want\n")
    assert f"disk {state}/microvm-nix.raw: " in kept.stdout
    assert listing(home.home) == before  # forget without --force changes nothing
    gone = home.run(agentbox, "forget", "--force")
    assert gone.returncode == 0, gone.stderr
    assert not state.exists()


TASK_ROOT = "task-root"


# ---- container mode (the test user) ----------------------------------------------------------


@pytest.fixture
def box(user_image: str, user_box: Callable[..., UserBox]) -> Iterator[UserBox]:
    """A project of the test user with a state dir of its own (so gc sees only its leftovers)."""
    with tempfile.TemporaryDirectory(prefix="agentbox-keep-state-") as state:
        os.chmod(state, 0o755)
        b = user_box(XDG_STATE_HOME=state)
        os.chown(state, b.pw.pw_uid, b.pw.pw_gid)
        yield b
        b.run("internal", "sidecar-reap", "--", str(b.state_dir), "localhost/agentbox:latest",
              "0")  # fmt: skip
        subprocess.run(["runuser", "-u", b.user, "--", *b.env(), "podman", "unshare", "rm",
                        "-rf", f"{state}/agentbox"], check=False, cwd="/tmp")  # fmt: skip


@pytest.mark.root
@pytest.mark.podman
@pytest.mark.image
def test_gc_after_kill_9_of_a_container_task(box: UserBox) -> None:
    proc = subprocess.Popen(box.argv("container", "--", "sleep", "5",
                                     AGENTBOX_SIDECAR_IDLE_GRACE="0"),
                            cwd=box.project, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    sidecar = f"agentbox-nix-{box.key}"
    deadline = time.monotonic() + 120
    # the sidecar starts once the task has run container.plan.SIDECAR_DEFER_SECONDS
    while True:
        names = box.podman("ps", "--format", "{{.Names}}").split()
        if sidecar in names and any(n.startswith("my-project-") for n in names):
            break
        assert time.monotonic() < deadline, "the task and its sidecar never both ran"
        assert proc.poll() is None
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run: agentbox and its podman run, a crash
    proc.wait()
    deadline = time.monotonic() + 30  # the task's own container ends with its sleep
    while time.monotonic() < deadline and box.leftovers()["containers"] != [sidecar]:
        time.sleep(0.5)
    assert box.leftovers() == {"containers": [sidecar], "fuse_mounts": 1}  # the idle sidecar
    before = listing(box.state_dir)
    dry = box.run("gc", "--dry-run")
    stale = records(box.state_dir)
    assert items(dry) == [("sidecar", f"{box.state_dir}/nix/merged")] + [
        ("stale-lease", p) for p in stale]  # fmt: skip
    assert f"idle Nix sidecar {sidecar}: no task holds it" in dry.stdout
    assert listing(box.state_dir) == before
    done = box.run("gc")
    assert done.returncode == 0, done.stderr
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}
    assert (box.state_dir / "nix" / "upper").is_dir()  # the project's /nix writes stay
    again = box.run("gc", "--dry-run")
    assert (again.returncode, again.stdout) == (0, "nothing to remove\n")
    before = listing(box.state_dir)
    kept = box.run("forget")
    assert kept.returncode == 1
    assert "hint: add --force" in kept.stderr
    assert listing(box.state_dir) == before


@pytest.mark.root
@pytest.mark.podman
@pytest.mark.image
def test_gc_unmounts_the_overlay_a_retired_sidecar_kept(box: UserBox) -> None:
    # the sleep outlasts container.plan.SIDECAR_DEFER_SECONDS: a sidecar container starts
    done = box.run("container", "--", "sleep", "1", AGENTBOX_SIDECAR_IDLE_GRACE="1")
    assert done.returncode == 0, done.stderr
    # after the grace its reaper removes the sidecar's container and keeps the overlay mounted
    # for the next cold start (container.plan.OVERLAY_IDLE_SECONDS)
    kept = {"containers": [], "fuse_mounts": 1}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and box.leftovers() != kept:
        time.sleep(0.5)
    assert box.leftovers() == kept
    dry = box.run("gc", "--dry-run")
    assert ("sidecar", f"{box.state_dir}/nix/merged") in items(dry)
    gone = box.run("gc")
    assert gone.returncode == 0, gone.stderr
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}, gone.stderr
    again = box.run("gc", "--dry-run")
    assert (again.returncode, again.stdout) == (0, "nothing to remove\n")


# ---- microvm, rootless (the test user) ---------------------------------------------------------


@pytest.fixture
def user_tmp() -> Iterator[Path]:
    """A scratch dir the test user can reach (pytest's own are root's, 0700)."""
    with tempfile.TemporaryDirectory(prefix="agentbox-keep-") as tmp:
        os.chmod(tmp, 0o755)
        yield Path(tmp)


@pytest.fixture
def user_state(user_tmp: Path, test_user: str) -> Iterator[Path]:
    """A btrfs (user_subvol_rm_allowed) for the test user's state: cache and task roots."""
    import pwd

    pw = pwd.getpwnam(test_user)
    with btrfs_loop(user_tmp / "user.img", user_tmp / "state") as mnt:
        os.chown(mnt, pw.pw_uid, pw.pw_gid)
        yield mnt


def as_user(test_user: str) -> list[str]:
    return ["runuser", "-u", test_user, "--", "env", "-i", f"HOME=/home/{test_user}",
            "PATH=/usr/bin:/bin"]  # fmt: skip


@pytest.fixture
def user_tiny(test_user: str) -> Iterator[str]:
    """The tiny image in the test user's own Buildah storage."""
    require_test_user()
    subprocess.run([*as_user(test_user), "sh", "-c", BUILD, "build", TINY], check=True,
                   capture_output=True, cwd="/tmp")  # fmt: skip
    yield TINY
    subprocess.run([*as_user(test_user), "buildah", "rmi", TINY], check=False,
                   capture_output=True, cwd="/tmp")  # fmt: skip


@pytest.mark.root
@pytest.mark.btrfs
@pytest.mark.libkrun
def test_rootless_gc_after_kill_9_and_a_rebuilt_tag(
    user_box: Callable[..., UserBox], user_state: Path, user_tiny: str, user_tmp: Path,
    test_user: str,
) -> None:  # fmt: skip
    """As the test user: a btrfs-snapshot task root (made in `buildah unshare`) left by a
    SIGKILL, and the cache entry of a tag since rebuilt; gc removes both in the user
    namespace."""
    box = user_box(XDG_STATE_HOME=str(user_state), AGENTBOX_SKIP_KVM_CHECK="1")
    where = user_tmp / "stub"
    quick = where / "quick"
    status = '"$1"' + STATUS_PATH  # the guest's report (loftd.guest reads it)
    # the image's / is 0555: the real guest is root; the stub's script runs as the user
    report = f'chmod u+w "$1"; mkdir -p "$(dirname {status})" && echo "exited 0" > {status}'
    lib, up = lingering_stub(STUB, where, f"[ -e {quick} ] || sleep 60\n{report}")
    os.chown(where, box.pw.pw_uid, box.pw.pw_gid)
    env = {"AGENTBOX_LIBKRUN_LIBRARY": str(lib)}
    run = subprocess.Popen(box.argv("--image", user_tiny, "microvm", "--storage",
                                    "btrfs-snapshot", "--", "true", **env),
                           cwd=box.project, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not up.exists():
            assert time.monotonic() < deadline, "the helper never reached krun_start_enter"
            assert run.poll() is None, "the run ended before its VM started"
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
    (task,) = (box.state_dir / "tasks").iterdir()
    images = user_state / "agentbox" / "images"
    (old,) = (images / "sha256").glob("[0-9a-f]*")
    # the tag is rebuilt (other content: another digest) and a run uses it; the killed task's
    # dir is still young, so that run's own collector leaves it
    subprocess.run([*as_user(test_user), "sh", "-c", BUILD, "build", user_tiny, "rebuilt"],
                   check=True, capture_output=True, cwd="/tmp")  # fmt: skip
    quick.touch()
    later = box.run("--image", user_tiny, "microvm", "--", "true", **env)
    assert later.returncode == 0, later.stderr
    assert task.exists()
    assert len(list((images / "sha256").glob("[0-9a-f]*"))) == 2
    hour_ago = time.time() - 3600
    os.utime(task, (hour_ago, hour_ago))

    stale = records(box.state_dir)
    dry = box.run("gc", "--dry-run")
    assert items(dry) == [(TASK_ROOT, os.fspath(task))] + [("stale-lease", p) for p in stale] + [
        ("image-entry", os.fspath(old))], dry.stdout  # fmt: skip
    done = box.run("gc")
    assert done.returncode == 0, done.stderr
    assert not task.exists()
    assert not old.exists()
    assert len(list((images / "sha256").glob("[0-9a-f]*"))) == 1  # the tag's entry stays
    again = box.run("gc", "--dry-run")
    assert (again.returncode, again.stdout) == (0, "nothing to remove\n")
    assert sorted(p.name for p in box.state_dir.glob("*.raw")) == [
        "microvm-containers.raw", "microvm-nix.raw"]  # fmt: skip
