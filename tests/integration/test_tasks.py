"""`agentbox ps`, `stop` and `kill` for real: container tasks of the test user (rootless
Podman), and an `agentbox microvm` run as root with the stub libkrun (the VM helper holds the
task's lock while "the VM" runs). `ps --json` is validated against its schema; what `ps` lists
is compared with what truly runs, also after the agentbox process group is killed mid-run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentbox_testing import require, require_root, require_test_user
from agentbox_testing.schemas import load_schema, problems
from agentbox_testing.stubvm import helper_pid, lingering_stub, start_lingering

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conftest import Home, UserBox

ROOT = Path(__file__).resolve().parents[2]
STUB = ROOT / "packages" / "agentbox-krun" / "tests" / "stub" / "libkrun_stub.c"
TINY = "localhost/agentbox-tiny:tasks"
BUILD = Path(__file__).with_name("tiny-image.sh").read_text()
GRACE = {"AGENTBOX_SIDECAR_IDLE_GRACE": "0"}


def listed(out: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    """The tasks of a `ps --json` run, after checking it against the schema."""
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert problems(doc, load_schema("agentbox_cli.tasks")) == []
    tasks: list[dict[str, object]] = doc["tasks"]
    return tasks


def of(project: Path, tasks: list[dict[str, object]]) -> list[dict[str, object]]:
    """The tasks of one project (root's and the test user's Podman may run others' too)."""
    return [t for t in tasks if t["project"] == str(project)]


# ---- container tasks (the test user) -----------------------------------------------------


@pytest.fixture
def box(user_image: str, user_box: Callable[..., UserBox]) -> Iterator[UserBox]:
    b = user_box()
    yield b
    b.run("internal", "sidecar-reap", "--", str(b.state_dir), "localhost/agentbox:latest", "0")


def start_task(box: UserBox, marker: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    """`agentbox container -- sleep 300` in the background, once `ps` lists its task."""
    run = subprocess.Popen(box.argv("container", "--", "sh", "-c", f"sleep 300; : {marker}",
                                    **GRACE),
                           cwd=box.project, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert run.poll() is None, run.communicate()
        mine = of(box.project, listed(box.run("ps", "--json")))
        if mine:
            (task,) = mine
            return run, task
        time.sleep(0.3)
    raise AssertionError("ps never listed the task")


def task_containers(box: UserBox) -> list[str]:
    return sorted(box.podman("ps", "--filter", "label=agentbox.role=task", "--filter",
                             f"label=agentbox.workspace={box.key}", "--format",
                             "{{.Names}}").split())  # fmt: skip


@pytest.mark.root
@pytest.mark.podman
@pytest.mark.image
def test_ps_lists_a_container_task_and_stop_ends_it(box: UserBox) -> None:
    run, task = start_task(box, "ps-stop")
    sidecar = f"agentbox-nix-{box.key}"
    assert task["mode"] == "container"
    assert task["image"] == "localhost/agentbox:latest"
    assert task["holds"] == [{"kind": "sidecar", "what": sidecar}]
    assert isinstance(task["pid"], int)
    name = str(task["name"])
    assert name.startswith("my-project-")
    assert task_containers(box) == [name]
    quiet = box.run("ps", "--quiet")
    assert (quiet.returncode, quiet.stderr) == (0, "")
    assert name in quiet.stdout.splitlines()
    table = box.run("ps").stdout.splitlines()
    assert table[0].split() == ["NAME", "MODE", "PROJECT", "IMAGE", "STARTED", "PID/ID", "HOLDS"]
    (line,) = [row.split() for row in table[1:] if row.startswith(name)]
    assert line[:4] == [name, "container", str(box.project), "localhost/agentbox:latest"]

    # the sidecar is agentbox's but no task, and an unknown name is nobody's: both refused
    for other in (sidecar, "no-such-task"):
        refused = box.run("stop", other)
        assert refused.returncode == 1
        assert refused.stderr == (f"agentbox: no running agentbox task is called {other!r}; "
                                  "nothing was signalled\nhint: 'agentbox ps' lists the running "
                                  "tasks by name\n")  # fmt: skip
    assert task_containers(box) == [name]
    assert sidecar in box.podman("ps", "--format", "{{.Names}}").split()

    stopped = box.run("stop", name)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == f"stopped {name} (container, {box.project})\n"
    run.communicate(timeout=60)
    # podman-stop(1): SIGTERM, then SIGKILL after 10 s if the task's process ignores it
    assert run.returncode == 128 + signal.SIGTERM, run.returncode
    assert task_containers(box) == []
    assert of(box.project, listed(box.run("ps", "--json"))) == []


@pytest.mark.root
@pytest.mark.podman
@pytest.mark.image
def test_kill_ends_a_container_task_and_ps_tells_the_truth_after_a_crash(box: UserBox) -> None:
    run, task = start_task(box, "ps-kill")
    killed = box.run("kill", str(task["name"]))
    assert killed.returncode == 0, killed.stderr
    run.communicate(timeout=60)
    assert run.returncode == 128 + signal.SIGKILL  # podman-kill(1) --signal KILL
    deadline = time.monotonic() + 30
    while task_containers(box) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert task_containers(box) == []
    assert of(box.project, listed(box.run("ps", "--json"))) == []

    # kill -9 of agentbox's process group mid-run (agentbox and its podman client): the
    # container itself may run on (conmon holds it); ps lists exactly what Podman still runs
    crashed, task = start_task(box, "ps-crash")
    os.killpg(crashed.pid, signal.SIGKILL)
    crashed.communicate()
    time.sleep(1)
    names = [str(t["name"]) for t in of(box.project, listed(box.run("ps", "--json")))]
    assert names == task_containers(box)
    if names:  # it ran on: it is still ours to kill, and then it is gone
        assert box.run("kill", names[0]).returncode == 0
        deadline = time.monotonic() + 30
        while task_containers(box) and time.monotonic() < deadline:
            time.sleep(0.3)
    assert of(box.project, listed(box.run("ps", "--json"))) == []


# ---- a microvm task (root, stub libkrun) -------------------------------------------------


@pytest.fixture(scope="module")
def tiny_image() -> Iterator[str]:
    require_root("rootful buildah storage")
    require(shutil.which("buildah") is not None, "buildah is missing (apt-get install buildah)")
    subprocess.run(["sh", "-c", BUILD, "build", TINY], check=True, capture_output=True)
    yield TINY
    subprocess.run(["buildah", "rmi", TINY], check=False, capture_output=True)


def lingering_vm(home: Home, cmd: Path, image: str, where: Path) -> subprocess.Popen[bytes]:
    """`agentbox microvm` or `loftd` (``cmd``, on fuse-overlay) whose stub "VM" stays up
    (60 s); returns once it is up."""
    lib, up = lingering_stub(STUB, where)
    app = cmd.name.upper()
    mode = ["microvm", "--storage"] if app == "AGENTBOX" else ["--rootfs-backend"]
    return start_lingering(
        [str(cmd), "--image", image, *mode, "fuse-overlay", "--", "true"], cwd=home.project,
        env={**home.env, f"{app}_LIBKRUN_LIBRARY": str(lib), f"{app}_SKIP_KVM_CHECK": "1"},
        up=up,
    )  # fmt: skip


@pytest.mark.root
@pytest.mark.podman
@pytest.mark.btrfs
@pytest.mark.libkrun
def test_a_microvm_run_shows_while_it_runs_and_stop_ends_its_vm(
    home: Home, agentbox: Path, tiny_image: str, tmp_path: Path
) -> None:
    run = lingering_vm(home, agentbox, tiny_image, tmp_path / "stub")
    try:
        (task,) = of(home.project, listed(home.run(agentbox, "ps", "--json")))
        helper = helper_pid(run)
        assert task["mode"] == "microvm"
        assert task["project"] == str(home.project)
        assert task["image"] == tiny_image  # from its launch.conf
        assert task["pid"] == helper  # the VM helper, not the command line
        assert task["container_id"] is None
        state = next((home.home / ".local/state/agentbox/workspaces").iterdir())
        assert task["holds"] == [
            {"kind": "disk", "what": str(state / "microvm-nix.raw")},
            {"kind": "disk", "what": str(state / "microvm-containers.raw")},
        ]
        assert (state / "tasks" / str(task["name"])).is_dir()
        stopped = home.run(agentbox, "stop", str(task["name"]))
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout == f"stopped {task['name']} (microvm, {home.project})\n"
        _, err = run.communicate(timeout=60)
        assert run.returncode != 0  # the VM ended under its command
        assert b"the VM stopped" in err, err
        assert of(home.project, listed(home.run(agentbox, "ps", "--json"))) == []
        assert list((state / "tasks").iterdir()) == []  # its own run cleaned up
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)


@pytest.mark.root
@pytest.mark.podman
@pytest.mark.btrfs
@pytest.mark.libkrun
def test_after_kill_9_of_a_microvm_run_ps_lists_nothing_stale(
    home: Home, agentbox: Path, tiny_image: str, tmp_path: Path
) -> None:
    run = lingering_vm(home, agentbox, tiny_image, tmp_path / "stub")
    try:
        (task,) = of(home.project, listed(home.run(agentbox, "ps", "--json")))
        os.killpg(run.pid, signal.SIGKILL)  # the command line and its VM helper, mid-run
        run.communicate()
        time.sleep(0.2)
        state = next((home.home / ".local/state/agentbox/workspaces").iterdir())
        assert [p.name for p in (state / "tasks").iterdir()] == [task["name"]]  # left behind
        assert of(home.project, listed(home.run(agentbox, "ps", "--json"))) == []  # none runs
        gone = home.run(agentbox, "kill", str(task["name"]))
        assert gone.returncode == 1
        assert "no running agentbox task is called" in gone.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        # the killed run's fuse-overlayfs lives on (a later run of the project removes it):
        # unmounted here, so the test leaves nothing mounted
        for root in home.home.glob(".local/state/agentbox/workspaces/*/tasks/*/rootfs-*"):
            subprocess.run(["fusermount3", "-u", str(root)], check=False, capture_output=True)


@pytest.mark.root
@pytest.mark.podman
@pytest.mark.btrfs
@pytest.mark.libkrun
def test_a_loftd_run_shows_as_loftd_and_kill_ends_its_vm(
    home: Home, agentbox: Path, loftd: Path, tiny_image: str, tmp_path: Path
) -> None:
    run = lingering_vm(home, loftd, tiny_image, tmp_path / "stub")
    try:
        (task,) = of(home.project, listed(home.run(agentbox, "ps", "--json")))
        state = next((home.home / ".local/state/loftd/workspaces").iterdir())
        assert (task["mode"], task["pid"]) == ("loftd", helper_pid(run))
        assert task["holds"] == [
            {"kind": "disk", "what": str(state / "loftd-containers.raw")},
            {"kind": "nix-overlay", "what": str(state / "nix-overlay")},
        ]
        killed = home.run(agentbox, "kill", str(task["name"]))
        assert killed.returncode == 0, killed.stderr
        assert killed.stdout == f"killed {task['name']} (loftd, {home.project})\n"
        run.communicate(timeout=60)
        assert run.returncode != 0
        assert of(home.project, listed(home.run(agentbox, "ps", "--json"))) == []
        assert list((state / "tasks").iterdir()) == []  # its own run cleaned up
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)


# ---- a rootless loftd task (its helper inside `buildah unshare`) --------------------------


@pytest.fixture
def user_tmp() -> Iterator[Path]:
    """A scratch dir the test user can reach (pytest's own are root's, 0700)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="agentbox-tasks-") as tmp:
        os.chmod(tmp, 0o755)
        yield Path(tmp)


@pytest.fixture
def user_tiny_image(test_user: str) -> Iterator[str]:
    """The tiny image in the test user's own Buildah storage."""
    require_test_user()
    user = ["runuser", "-u", test_user, "--", "env", "-i", f"HOME=/home/{test_user}",
            "PATH=/usr/bin:/bin"]  # fmt: skip
    subprocess.run([*user, "sh", "-c", BUILD, "build", TINY], check=True, capture_output=True,
                   cwd="/tmp")  # fmt: skip
    yield TINY
    subprocess.run([*user, "buildah", "rmi", TINY], check=False, capture_output=True, cwd="/tmp")


@pytest.mark.root
@pytest.mark.podman
@pytest.mark.libkrun
def test_a_rootless_loftd_task_is_listed_and_stopped_by_its_user(
    user_box: Callable[..., UserBox], user_tiny_image: str, user_tmp: Path
) -> None:
    """loftd as an ordinary user runs its helper inside `buildah unshare` (a user namespace):
    the user's `ps` still finds that helper by the task's lock, and `stop` reaches it."""
    box = user_box(XDG_STATE_HOME=str(user_tmp / "state"), LOFTD_SKIP_KVM_CHECK="1")
    where = user_tmp / "stub"
    lib, up = lingering_stub(STUB, where)
    os.chown(where, box.pw.pw_uid, box.pw.pw_gid)
    (user_tmp / "state").mkdir()
    os.chown(user_tmp / "state", box.pw.pw_uid, box.pw.pw_gid)
    argv = box.argv("--image", user_tiny_image, "--rootfs-backend", "fuse-overlay", "--", "true",
                    module="loftd", LOFTD_LIBKRUN_LIBRARY=str(lib))  # fmt: skip
    run = subprocess.Popen(argv, cwd=box.project, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not up.exists():
            assert time.monotonic() < deadline, "the helper never reached krun_start_enter"
            assert run.poll() is None, run.communicate()
            time.sleep(0.05)
        (task,) = of(box.project, listed(box.run("ps", "--json")))
        assert task["mode"] == "loftd"
        pid = task["pid"]
        assert isinstance(pid, int)
        assert b"agentbox_krun.enter" in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert os.stat(f"/proc/{pid}").st_uid == box.pw.pw_uid  # the user's own helper
        stopped = box.run("stop", str(task["name"]))
        assert stopped.returncode == 0, stopped.stderr
        run.communicate(timeout=60)
        assert run.returncode != 0
        assert of(box.project, listed(box.run("ps", "--json"))) == []
        assert list((box.loftd_state_dir / "tasks").iterdir()) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
