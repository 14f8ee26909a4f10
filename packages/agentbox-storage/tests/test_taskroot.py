"""Task roots from every backend, against real btrfs and fuse-overlayfs, as root and rootless."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agentbox_state.errors import AgentboxError
from agentbox_state.runner import SubprocessRunner
from agentbox_state.testing import HidingRunner, RecordingRunner
from agentbox_storage import argv, taskroot
from agentbox_storage.backends import Backend
from agentbox_storage.errors import StorageError
from agentbox_storage.mounts import DEAD_FUSE_ERRNOS, is_mounted, mount_points
from agentbox_storage.taskroot import TaskRoot
from agentbox_testing import require_root, run_as_user

RUNNER = SubprocessRunner(os.environ)
MakeRootfs = Callable[..., Path]


@pytest.fixture
def cache(btrfs: Path, make_rootfs: MakeRootfs) -> Path:
    """A cached image rootfs: a subvolume on the btrfs mount, unique per test."""
    require_root("btrfs subvolumes on a loop mount")
    work = Path(tempfile.mkdtemp(dir=btrfs))
    return make_rootfs(work / "rootfs", subvolume=True)


def listing(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_uid, st.st_size)
    return out


def test_layout_is_pure() -> None:
    t = Path("/s/tasks/t1")
    assert taskroot.layout(Backend.FUSE_OVERLAY, t) == TaskRoot(
        backend=Backend.FUSE_OVERLAY, task_dir=t, rootfs=t / "rootfs-fuse-overlay",
        upper=t / "upper-fuse-overlay", work=t / "work-fuse-overlay",
    )  # fmt: skip
    assert taskroot.layout(Backend.BTRFS_SNAPSHOT, t).rootfs == t / "rootfs-btrfs-snapshot"
    assert taskroot.layout(Backend.REFLINK, t).rootfs == t / "rootfs-reflink"
    with pytest.raises(ValueError, match="not a layout"):
        taskroot.layout(Backend.AUTO, t)


def test_snapshot_argv_rootless(tmp_path: Path) -> None:
    rec = RecordingRunner()
    root = taskroot.materialize(Backend.BTRFS_SNAPSHOT, Path("/c/rootfs"), tmp_path / "t", rec,
                                userns=("buildah", "unshare"))  # fmt: skip
    assert rec.argvs == [["buildah", "unshare", "btrfs", "subvolume", "snapshot", "/c/rootfs",
                          f"{tmp_path}/t/rootfs-btrfs-snapshot"]]  # fmt: skip
    assert root.rootfs == tmp_path / "t" / "rootfs-btrfs-snapshot"


@pytest.mark.parametrize("backend", [Backend.BTRFS_SNAPSHOT, Backend.FUSE_OVERLAY, Backend.REFLINK])
@pytest.mark.root
@pytest.mark.btrfs
def test_backend_gives_a_writable_copy_that_leaves_the_cache_alone(
    cache: Path, backend: Backend
) -> None:
    before = listing(cache)
    task_dir = cache.parent / "tasks" / "t1"
    root = taskroot.materialize(backend, cache, task_dir, RUNNER)
    assert root.backend is backend
    assert listing(root.rootfs) == before
    (root.rootfs / "etc" / "os-release").write_text("ID=changed\n")
    (root.rootfs / "new-file").write_text("task data")
    assert listing(cache) == before
    assert (cache / "etc" / "os-release").read_text() == "ID=test\n"
    if backend is Backend.FUSE_OVERLAY:
        assert is_mounted(root.rootfs)
        assert root.upper is not None
        assert (root.upper / "new-file").read_text() == "task data"
    assert taskroot.cleanup(root, RUNNER) == []
    assert not task_dir.exists()
    assert not is_mounted(root.rootfs)
    assert listing(cache) == before


@pytest.mark.root
@pytest.mark.btrfs
def test_snapshot_refuses_a_non_btrfs_task_dir(cache: Path, tmp_path: Path) -> None:
    task_dir = tmp_path / "t1"  # /tmp is not btrfs
    with pytest.raises(StorageError) as caught:
        taskroot.materialize(Backend.BTRFS_SNAPSHOT, cache, task_dir, RUNNER)
    assert caught.value.message.startswith(
        f"btrfs snapshot of {cache} into {task_dir}/rootfs-btrfs-snapshot failed: "
    )
    assert caught.value.hint == (
        "the image cache and the task dir must be on one btrfs filesystem; otherwise choose the "
        "fuse-overlay backend (agentbox microvm --storage, loftd --rootfs-backend)"
    )
    assert not (task_dir / "rootfs-btrfs-snapshot").exists()


def test_reflink_fails_instead_of_copying(tmp_path: Path, make_rootfs: MakeRootfs) -> None:
    source = make_rootfs(tmp_path / "src", subvolume=False)  # on ext4: no reflinks
    task_dir = tmp_path / "t1"
    with pytest.raises(StorageError) as caught:
        taskroot.materialize(Backend.REFLINK, source, task_dir, RUNNER)
    assert caught.value.message.startswith(f"reflink copy of {source} into ")
    assert "never falls back to copying bytes" in (caught.value.hint or "")
    assert not (task_dir / "rootfs-reflink").exists(), "partial output must be removed"


@pytest.mark.root
@pytest.mark.btrfs
def test_auto_prefers_the_snapshot(cache: Path) -> None:
    root = taskroot.materialize(Backend.AUTO, cache, cache.parent / "tasks" / "a", RUNNER)
    assert root.backend is Backend.BTRFS_SNAPSHOT
    taskroot.cleanup(root, RUNNER)


def test_auto_falls_back_to_the_overlay_and_never_to_reflink(
    tmp_path: Path, make_rootfs: MakeRootfs
) -> None:
    source = make_rootfs(tmp_path / "src", subvolume=False)
    task_dir = tmp_path / "t1"
    root = taskroot.materialize(Backend.AUTO, source, task_dir, RUNNER)
    try:
        assert root.backend is Backend.FUSE_OVERLAY
        assert sorted(p.name for p in task_dir.iterdir()) == [
            "rootfs-fuse-overlay", "upper-fuse-overlay", "work-fuse-overlay",
        ]  # fmt: skip
    finally:
        taskroot.cleanup(root, RUNNER)


def test_auto_reports_both_failures(tmp_path: Path) -> None:
    tools = tmp_path / "tools"  # a PATH with the shell utilities but no btrfs, no fuse-overlayfs
    tools.mkdir()
    for tool in ("sh", "chmod", "rm", "findmnt"):
        (tools / tool).symlink_to(f"/usr/bin/{tool}" if Path(f"/usr/bin/{tool}").exists()
                                  else f"/bin/{tool}")  # fmt: skip
    runner = HidingRunner({"PATH": str(tools)}, hide=["btrfs", "fuse-overlayfs"])
    with pytest.raises(StorageError) as caught:
        taskroot.materialize(Backend.AUTO, tmp_path / "src", tmp_path / "t1", runner)
    lines = caught.value.message.splitlines()
    assert lines[0] == "no task root backend worked (tried btrfs-snapshot, then fuse-overlay):"
    assert lines[1].startswith("  btrfs-snapshot: ")
    assert lines[2].startswith("  fuse-overlay: ")
    assert not (tmp_path / "t1" / "rootfs-fuse-overlay").exists()


@pytest.mark.root
@pytest.mark.btrfs
def test_stale_output_of_a_killed_run_is_replaced(cache: Path) -> None:
    task_dir = cache.parent / "tasks" / "t1"
    first = taskroot.materialize(Backend.BTRFS_SNAPSHOT, cache, task_dir, RUNNER)
    (first.rootfs / "stale").write_text("left by a killed run")
    again = taskroot.materialize(Backend.BTRFS_SNAPSHOT, cache, task_dir, RUNNER)
    assert not (again.rootfs / "stale").exists()
    taskroot.cleanup(again, RUNNER)


@pytest.mark.root
@pytest.mark.btrfs
def test_preserve_debug_keeps_everything_and_the_commands_clean_it(cache: Path) -> None:
    for backend in (Backend.BTRFS_SNAPSHOT, Backend.FUSE_OVERLAY):
        task_dir = cache.parent / "tasks" / backend.value
        root = taskroot.materialize(backend, cache, task_dir, RUNNER)
        commands = taskroot.cleanup(root, RUNNER, preserve=True)
        assert root.rootfs.exists()
        assert (task_dir / "preserved").read_text() == "\n".join(commands) + "\n"
        assert len(commands) == 2
        for line in commands:  # what the user would paste
            subprocess.run(["sh", "-c", line], check=True, capture_output=True)
        assert not task_dir.exists()
        assert not is_mounted(root.rootfs)


def overlay_daemon(merged: Path) -> int:
    """The pid of the fuse-overlayfs serving ``merged``."""
    (pid,) = subprocess.run(["pgrep", "-f", f"fuse-overlayfs.*{merged}"], capture_output=True,
                            text=True, check=True).stdout.split()  # fmt: skip
    return int(pid)


def _gone(pid: int) -> bool:
    try:  # a zombie has closed its files already: its mount is aborted
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _waits_for_fuse(thread: threading.Thread) -> bool:
    wchan = Path(f"/proc/self/task/{thread.native_id}/wchan")
    try:
        return wchan.read_text() == "request_wait_answer"
    except FileNotFoundError:
        return False


def kill_overlay_daemon(merged: Path, *, during: Callable[[], object] | None = None) -> object:
    """SIGKILL the fuse-overlayfs serving ``merged`` and return once it is dead.

    With ``during``, the daemon dies while that call's request to it is in flight: the daemon
    is stopped, ``during`` runs in a thread until it waits in the kernel for the answer (or for
    at most 2 s), then the daemon is killed. Returns what ``during`` returned or raised. (The
    kernel ends a request in flight with another errno than one made afterwards: both ways of
    meeting a dead mount are tested.)"""
    pid = overlay_daemon(merged)
    if during is None:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not _gone(pid):
            assert time.monotonic() < deadline, f"fuse-overlayfs {pid} outlived SIGKILL"
            time.sleep(0.01)
        return None
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(outcome_of(during)))
    os.kill(pid, signal.SIGSTOP)
    try:
        thread.start()
        deadline = time.monotonic() + 2
        while not outcome and not _waits_for_fuse(thread) and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        os.kill(pid, signal.SIGKILL)
    thread.join(30)
    assert outcome, f"{during} did not return after the daemon of {merged} died"
    return outcome[0]


def outcome_of(call: Callable[[], object]) -> object:
    """What ``call`` returns, or the OSError it raises."""
    try:
        return call()
    except OSError as err:
        return err


def access(path: Path) -> object:
    """What listing ``path`` returns or raises."""
    return outcome_of(functools.partial(os.listdir, path))


def assert_dead(seen: object) -> None:
    assert isinstance(seen, OSError), f"a dead FUSE mount answered: {seen!r}"
    assert seen.errno in DEAD_FUSE_ERRNOS, seen


WHEN = pytest.mark.parametrize("in_flight", [False, True], ids=["afterwards", "in-flight"])


@WHEN
@pytest.mark.root
@pytest.mark.btrfs
def test_unmount_after_the_overlay_daemon_was_killed(cache: Path, in_flight: bool) -> None:
    task_dir = cache.parent / "tasks" / f"crash-{in_flight}"
    root = taskroot.materialize(Backend.FUSE_OVERLAY, cache, task_dir, RUNNER)
    if in_flight:
        assert_dead(kill_overlay_daemon(root.rootfs, during=lambda: access(root.rootfs)))
    else:
        kill_overlay_daemon(root.rootfs)
    assert_dead(access(root.rootfs))  # every later access fails the same way
    assert_dead(outcome_of(root.rootfs.lstat))
    assert is_mounted(root.rootfs), "a dead mount stays in the mount table"
    taskroot.cleanup(root, RUNNER)
    assert not is_mounted(root.rootfs)
    assert not os.path.lexists(task_dir)


@WHEN
@pytest.mark.root
@pytest.mark.btrfs
def test_a_dead_fuse_mount_is_no_subvolume(cache: Path, in_flight: bool) -> None:
    task_dir = cache.parent / "tasks" / f"subvolume-{in_flight}"
    root = taskroot.materialize(Backend.FUSE_OVERLAY, cache, task_dir, RUNNER)
    try:
        probe = functools.partial(taskroot.is_subvolume, root.rootfs)
        if in_flight:
            assert kill_overlay_daemon(root.rootfs, during=probe) is False
        else:
            kill_overlay_daemon(root.rootfs)
            assert probe() is False
    finally:
        taskroot.cleanup(root, RUNNER)
    assert not os.path.lexists(task_dir)


@WHEN
@pytest.mark.root
@pytest.mark.btrfs
def test_garbage_collection_survives_dead_fuse_mounts(
    cache: Path, tmp_path: Path, in_flight: bool
) -> None:
    tasks = cache.parent / f"tasks-{in_flight}"
    crashed = taskroot.materialize(Backend.FUSE_OVERLAY, cache, tasks / "crashed", RUNNER)
    kill_overlay_daemon(crashed.rootfs)  # its owner (no lock: never took it) and daemon died
    stray = tasks / "stray"  # a mount of someone else's right in the tasks dir: not a task dir
    for d in (stray, tmp_path / "upper", tmp_path / "work"):
        d.mkdir(parents=True)
    RUNNER.run(argv.fuse_overlayfs(cache, tmp_path / "upper", tmp_path / "work", stray))
    try:
        collect = functools.partial(taskroot.collect_garbage, tasks, RUNNER)
        if in_flight:
            removed = kill_overlay_daemon(stray, during=collect)
        else:
            kill_overlay_daemon(stray)
            removed = collect()
        assert removed == [tasks / "crashed"]
        assert not is_mounted(crashed.rootfs)
        assert is_mounted(stray), "not ours: left alone"
        assert_dead(access(stray))
    finally:
        taskroot.unmount_fuse(stray, RUNNER)
    assert sorted(p.name for p in tasks.iterdir()) == ["stray"]


HOLDER = """
import sys, time
from pathlib import Path
from agentbox_state.runner import SubprocessRunner
from agentbox_storage import taskroot
from agentbox_storage.backends import Backend
import os
task_dir = Path(sys.argv[2])
task_dir.mkdir(parents=True)
lock = taskroot.task_lock(task_dir)
lock.acquire()
runner = SubprocessRunner(os.environ)
taskroot.materialize(Backend(sys.argv[3]), Path(sys.argv[1]), task_dir, runner)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.root
@pytest.mark.btrfs
def test_garbage_collection_takes_only_abandoned_tasks(cache: Path) -> None:
    tasks = cache.parent / "tasks"
    procs = {}
    for name, backend in (("dead-snap", "btrfs-snapshot"), ("dead-fuse", "fuse-overlay"),
                          ("alive", "btrfs-snapshot")):  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(cache), str(tasks / name), backend],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs[name] = proc
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
    kept = taskroot.materialize(Backend.BTRFS_SNAPSHOT, cache, tasks / "kept", RUNNER)
    taskroot.cleanup(kept, RUNNER, preserve=True)
    try:
        for name in ("dead-snap", "dead-fuse"):
            procs[name].kill()  # killed: no cleanup ran
            procs[name].wait()
        assert is_mounted(tasks / "dead-fuse" / "rootfs-fuse-overlay")
        removed = taskroot.collect_garbage(tasks, RUNNER)
        assert removed == [tasks / "dead-fuse", tasks / "dead-snap"]
        assert sorted(p.name for p in tasks.iterdir()) == ["alive", "kept"]
        assert not is_mounted(tasks / "dead-fuse" / "rootfs-fuse-overlay")
        assert taskroot.collect_garbage(tasks, RUNNER, include_preserved=True) == [tasks / "kept"]
    finally:
        procs["alive"].kill()
        procs["alive"].wait()
        for p in procs.values():
            assert p.stdout is not None
            p.stdout.close()
    assert taskroot.collect_garbage(tasks, RUNNER) == [tasks / "alive"]


def test_garbage_collection_spares_young_and_shared_locked_tasks(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    for name in ("old", "young", "held", "lockless"):
        (tasks / name).mkdir(parents=True)
    for name in ("old", "young"):
        taskroot.task_lock(tasks / name).path.touch()  # locks that were released
    helper = taskroot.task_lock(tasks / "held")
    helper.acquire(shared=True)  # as the VM helper holds it while its parent is gone
    hour_ago = time.time() - 3600
    for name in ("old", "held", "lockless"):  # after the lock files: they touch their dirs
        os.utime(tasks / name, (hour_ago, hour_ago))
    try:
        removed = taskroot.collect_garbage(tasks, RUNNER, min_age=60)
    finally:
        helper.release()
    # "lockless": an owner killed between making its dir and locking it
    assert removed == [tasks / "lockless", tasks / "old"]
    assert sorted(p.name for p in tasks.iterdir()) == ["held", "young"]


def test_garbage_collection_goes_on_past_a_task_it_cannot_remove(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    for name in ("a", "b"):
        (tasks / name).mkdir(parents=True)
    rec = RecordingRunner()
    rec.script(*argv.remove_tree(tasks / "a"), returncode=1, stderr="rm: busy\n")
    failed: list[Path] = []
    removed = taskroot.collect_garbage(tasks, rec, on_error=lambda p, _err: failed.append(p))
    assert (removed, failed) == ([tasks / "b"], [tasks / "a"])
    with pytest.raises(AgentboxError):  # without on_error, the error is raised
        taskroot.collect_garbage(tasks, rec)


def test_mountinfo_parsing() -> None:
    table = (
        "36 35 98:0 / /mnt\\040with\\040space rw - ext3 /dev/root rw\n"
        "37 35 0:5 / /proc rw - proc proc rw\n"
    )
    assert mount_points(table) == ["/mnt with space", "/proc"]


ROOTLESS = r"""
import json, os, subprocess, sys
from pathlib import Path
from agentbox_state.runner import SubprocessRunner
from agentbox_storage import taskroot
from agentbox_storage.backends import Backend
from agentbox_storage.errors import StorageError
from agentbox_storage.mounts import is_mounted
runner = SubprocessRunner(os.environ)
userns = ("buildah", "unshare")
base = Path(sys.argv[1])
src = base / "cache-rootfs"
# The cache is written inside the user namespace, so image files keep their owners (subuids).
subprocess.run([*userns, "sh", "-c", f"btrfs subvolume create {src} >/dev/null && "
                f"mkdir -p {src}/etc && echo ID=test > {src}/etc/os-release && "
                f"chown 1000:1000 {src}/etc/os-release && mkdir {src}/ro && chmod 555 {src}/ro"],
               check=True)
out = {}
for backend in ("btrfs-snapshot", "fuse-overlay", "reflink", "auto"):
    task_dir = base / "tasks" / backend
    root = taskroot.materialize(Backend(backend), src, task_dir, runner, userns=userns)
    owner = subprocess.run([*userns, "stat", "-c", "%u", str(root.rootfs / "etc/os-release")],
                           capture_output=True, text=True, check=True).stdout.strip()
    (root.rootfs / "mine").write_text("x") if backend != "reflink" else None
    taskroot.cleanup(root, runner, userns=userns)
    out[backend] = [root.backend.value, owner, task_dir.exists(), is_mounted(root.rootfs)]
# Without user_subvol_rm_allowed the delete ioctl is refused; removing the files still works.
strict = Path(sys.argv[2]) / "src"
subprocess.run([*userns, "sh", "-c", f"btrfs subvolume create {strict} && echo x > {strict}/f"],
               check=True, capture_output=True)
root = taskroot.materialize(Backend.BTRFS_SNAPSHOT, strict, strict.parent / "t", runner,
                            userns=userns)
taskroot.cleanup(root, runner, userns=userns)
out["strict-fallback"] = root.task_dir.exists()
# When that fails too (here: root made a file immutable), the error says how to add the option.
taskroot.materialize(Backend.BTRFS_SNAPSHOT, strict, strict.parent / "t2", runner, userns=userns)
print(json.dumps(out))
"""

ROOTLESS_BLOCKED = r"""
import json, os
from pathlib import Path
from agentbox_state.runner import SubprocessRunner
from agentbox_storage import taskroot
from agentbox_storage.backends import Backend
from agentbox_storage.errors import StorageError
root = taskroot.layout(Backend.BTRFS_SNAPSHOT, Path(TASK_DIR))
try:
    taskroot.cleanup(root, SubprocessRunner(os.environ), userns=("buildah", "unshare"))
except StorageError as err:
    print(json.dumps([err.message, err.hint]))
"""


@pytest.mark.root
@pytest.mark.btrfs
def test_rootless(btrfs: Path, btrfs_strict: Path) -> None:
    require_root("preparing the user's dirs on the loop mounts")
    import pwd

    from agentbox_testing import test_user

    user = pwd.getpwnam(test_user())
    dirs = []
    for fs in (btrfs, btrfs_strict):
        d = Path(tempfile.mkdtemp(dir=fs))
        os.chown(d, user.pw_uid, user.pw_gid)
        dirs.append(d)
    packages = ["agentbox_state", "agentbox_storage"]
    code = ROOTLESS.replace("sys.argv[1]", repr(str(dirs[0]))).replace(
        "sys.argv[2]", repr(str(dirs[1]))
    )
    done = run_as_user(code, packages=packages, cwd=dirs[0])
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    for backend, shown in (("btrfs-snapshot", "btrfs-snapshot"), ("fuse-overlay", "fuse-overlay"),
                           ("reflink", "reflink"), ("auto", "btrfs-snapshot")):  # fmt: skip
        assert out[backend][0] == shown
        assert out[backend][2:] == [False, False], f"{backend} left something behind"
    # inside the namespace, the image's owners are intact where the data is shared or copied
    assert out["btrfs-snapshot"][1] == out["reflink"][1] == "1000"
    assert out["strict-fallback"] is False, "the task dir must be gone without the mount option"

    task_dir = dirs[1] / "t2"
    blocker = task_dir / "rootfs-btrfs-snapshot" / "f"
    subprocess.run(["chattr", "+i", str(blocker)], check=True)
    try:
        code = ROOTLESS_BLOCKED.replace("TASK_DIR", repr(str(task_dir)))
        done = run_as_user(code, packages=packages, cwd=dirs[1])
    finally:
        subprocess.run(["chattr", "-i", str(blocker)], check=True)
    assert done.returncode == 0, done.stderr
    message, hint = json.loads(done.stdout)
    mountpoint = str(btrfs_strict)
    # what failed and on what; btrfs's and rm's own words (they vary by version) follow each
    assert message.startswith(
        f"cannot delete the btrfs subvolume {task_dir}/rootfs-btrfs-snapshot: "
    )
    assert "; removing its files failed too: " in message
    assert hint.startswith(
        "deleting a btrfs subvolume without root needs the mount option user_subvol_rm_allowed"
        f" on {mountpoint} (now: {mountpoint} "
    )
    assert hint.endswith(
        f"add it with: sudo mount -o remount,user_subvol_rm_allowed {mountpoint} "
        "(and in /etc/fstab to keep it)"
    )


def test_garbage_collection_dry_run_lists_what_would_go_and_only_limits_it(
    tmp_path: Path,
) -> None:
    tasks = tmp_path / "tasks"
    for name in ("old", "lockless", "held", "kept", "other"):
        (tasks / name).mkdir(parents=True)
    taskroot.task_lock(tasks / "old").path.touch()
    taskroot.task_lock(tasks / "kept").path.touch()
    (tasks / "kept" / taskroot.PRESERVED_NAME).write_text("kept\n")
    helper = taskroot.task_lock(tasks / "held")
    helper.acquire(shared=True)
    try:
        listed = taskroot.collect_garbage(tasks, RUNNER, dry_run=True)
        assert listed == [tasks / "lockless", tasks / "old", tasks / "other"]
        assert sorted(p.name for p in tasks.iterdir()) == ["held", "kept", "lockless", "old",
                                                           "other"]  # fmt: skip
        removed = taskroot.collect_garbage(tasks, RUNNER, only={tasks / "old", tasks / "held"})
    finally:
        helper.release()
    assert removed == [tasks / "old"]  # "held" is live, the rest were not asked for
    assert sorted(p.name for p in tasks.iterdir()) == ["held", "kept", "lockless", "other"]
