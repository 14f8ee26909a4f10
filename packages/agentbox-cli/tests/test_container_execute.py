"""Container mode's execution of its plan, with the recording runner: what runs, in which order,
what the user is told, and that the locks are free afterwards."""

import time
from collections.abc import Sequence
from pathlib import Path

from agentbox_cli.container import execute, imagefacts, sidecar
from agentbox_cli.container.plan import (
    DAEMON_STARTING_ENV,
    SIDECAR_DEFER_SECONDS,
    ContainerPlan,
    ContainerRequest,
    HostFacts,
    plan_container,
)
from agentbox_cli.container.storage_check import VFS_FIX
from agentbox_state.profile import Profiler
from agentbox_state.runner import Completed
from agentbox_state.testing import RecordingRunner

IMAGE = "localhost/agentbox:latest"
ID = "f" * 64
ENTRY = '["/bin/agentbox-guest-init","default","enter","--"]'


class ConmonRunner(RecordingRunner):
    """Writes the conmon pid file a ``podman run --conmon-pidfile`` would; its task runs
    ``task_seconds``, longer than the sidecar's deferral unless a test says otherwise."""

    task_seconds = SIDECAR_DEFER_SECONDS + 0.3

    def run(self, argv: Sequence[str], **kw: object) -> Completed:
        if "--conmon-pidfile" in argv:
            Path(argv[list(argv).index("--conmon-pidfile") + 1]).write_text("4242")
        return super().run(argv, **kw)  # type: ignore[arg-type]

    def interactive(self, argv: Sequence[str], **kw: object) -> int:
        time.sleep(self.task_seconds)
        return super().interactive(argv, **kw)  # type: ignore[arg-type]


def container_plan(tmp_path: Path) -> ContainerPlan:
    req = ContainerRequest(
        image=IMAGE, workspace_key="app-0123456789ab", slug="app", hostname="app-agentbox",
        task_name="app-1", state_dir=tmp_path / "ws", sccache=tmp_path / "sccache",
        command=("true",), root=False, debug=False, grace=120,
    )  # fmt: skip
    host = HostFacts(uid=1000, gid=1000, home=tmp_path / "home", cwd=tmp_path / "app",
                     stdin_tty=False, stdout_tty=False)  # fmt: skip
    plan = plan_container(req, host)
    plan.sidecar.state_file.parent.mkdir(parents=True)
    return plan


def cold(tmp_path: Path, rec: RecordingRunner, driver: str = "overlay") -> imagefacts.FactsCache:
    """The image is there (asked once, by the image lookup); no sidecar runs."""
    rec.script(*imagefacts.inspect_argv(IMAGE, debug=False),
               stdout=f"{ID}\t{ENTRY}\t{driver}\t<no value>\n")  # fmt: skip
    cache = imagefacts.FactsCache(rec, debug=False)
    assert cache.exists(IMAGE)
    rec.calls.clear()
    return cache


def run(plan: ContainerPlan, rec: RecordingRunner, cache: imagefacts.FactsCache,
        marker: Path) -> tuple[int, list[str]]:  # fmt: skip
    said: list[str] = []
    quiet = Profiler("test", enabled=False)
    status = execute.run_task(plan, rec, cache=cache, vfs_marker=marker, profiler=quiet,
                              err=said.append)  # fmt: skip
    return status, said


def test_a_cold_start_runs_the_task_beside_the_starting_sidecar(tmp_path: Path) -> None:
    plan = container_plan(tmp_path)
    rec = ConmonRunner()
    rec.script("podman", "run", "--rm", returncode=7)  # the task's own exit status
    rec.script("podman", "run", "--detach", stdout="cid0\n")
    status, said = run(plan, rec, cold(tmp_path, rec), tmp_path / "vfs-warned")
    assert (status, said) == (7, [])
    task = plan.task_for(daemon_starting=True)
    assert DAEMON_STARTING_ENV in task.env
    reaper = rec.argvs[-1]
    assert rec.argvs[:2] == [
        ["fuse-overlayfs", "--version"],
        [*plan.sidecar.userns, "sh", "-c", plan.sidecar.mount_script(ID)],
    ]
    # the sidecar's start (a worker thread) and the task, in either order; then the reaper
    assert sorted(rec.argvs[2:4]) == sorted([plan.sidecar.run_argv(ID), task.argv()])
    assert reaper[-5:] == ["sidecar-reap", "--", str(plan.sidecar.state_file.parent), IMAGE,
                           "120"]  # fmt: skip
    assert len(rec.argvs) == 5
    assert sidecar.read_state(plan.sidecar.state_file)["container_id"] == "cid0"
    for lock in (sidecar.setup_lock(tmp_path / "ws"), sidecar.users_lock(tmp_path / "ws")):
        lock.acquire(wait=0)  # both free again
        lock.release()
    assert not (tmp_path / "vfs-warned").exists()


def test_a_task_that_ends_before_the_deferral_starts_no_sidecar(tmp_path: Path) -> None:
    plan = container_plan(tmp_path)
    rec = ConmonRunner()
    rec.task_seconds = 0.0
    rec.script("podman", "run", "--rm", returncode=3)
    status, said = run(plan, rec, cold(tmp_path, rec), tmp_path / "vfs-warned")
    assert (status, said) == (3, [])
    task = plan.task_for(daemon_starting=True)
    mount = [*plan.sidecar.userns, "sh", "-c", plan.sidecar.mount_script(ID)]
    assert rec.argvs[:3] == [["fuse-overlayfs", "--version"], mount, task.argv()]
    assert rec.argvs[3][-5:] == ["sidecar-reap", "--", str(plan.sidecar.state_file.parent),
                                 IMAGE, "120"]  # fmt: skip
    assert len(rec.argvs) == 4  # no `podman run --detach` of the sidecar
    state = sidecar.read_state(plan.sidecar.state_file)
    # kept mounted for the next start, as a retired overlay no reaper holds yet
    assert state["retired"].startswith("deferred@")
    assert "container_id" not in state
    for lock in (sidecar.setup_lock(tmp_path / "ws"), sidecar.users_lock(tmp_path / "ws")):
        lock.acquire(wait=0)
        lock.release()


def test_a_sidecar_that_fails_to_start_is_reported_after_the_task(tmp_path: Path) -> None:
    plan = container_plan(tmp_path)
    rec = ConmonRunner()
    rec.script("podman", "run", "--detach", returncode=125, stderr="Error: no room\n")
    status, said = run(plan, rec, cold(tmp_path, rec), tmp_path / "vfs-warned")
    assert status == 1
    argv = " ".join(plan.sidecar.run_argv(ID))
    assert said == [f"agentbox: `{argv}` failed with exit status 125\n  Error: no room"]
    assert not plan.sidecar.state_file.exists()  # torn down
    setup = sidecar.setup_lock(tmp_path / "ws")
    setup.acquire(wait=0)
    setup.release()


def test_the_vfs_warning_comes_once_from_the_inspect_before_the_task(tmp_path: Path) -> None:
    plan = container_plan(tmp_path)
    rec = ConmonRunner()
    rec.script("podman", "run", "--detach", stdout="cid0\n")
    marker = tmp_path / "base" / "vfs-warned"
    status, said = run(plan, rec, cold(tmp_path, rec, driver="vfs"), marker)
    assert (status, said) == (0, [VFS_FIX])
    assert not any(argv[:2] == ["podman", "info"] for argv in rec.argvs)
    sidecar.teardown(plan.sidecar, rec)
    status, said = run(plan, rec, cold(tmp_path, rec, driver="vfs"), marker)
    assert (status, said) == (0, [])
