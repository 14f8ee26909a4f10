"""The Nix sidecar's lifecycle: start or reuse it, and remove it once idle.

Two lock files in the workspace's ``locks`` dir keep this safe without asking Podman on the
hot path: ``sidecar.lock`` (exclusive) guards starting and removing; every running task holds
``sidecar-users.lock`` shared. Removal needs both exclusively, so it can never happen while a
task runs, and a task that was killed releases its share with its process. Before removing,
Podman is still asked for running tasks of this sidecar (a task container can outlive a killed
agentbox); if that question cannot be answered, nothing is removed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from agentbox_cli.container.plan import SidecarPlan
from agentbox_podman import podman
from agentbox_podman.errors import PodmanError
from agentbox_state.errors import AgentboxError
from agentbox_state.lock import FileLock
from agentbox_state.runner import Runner


def setup_lock(state_dir: Path) -> FileLock:
    return FileLock(state_dir / "locks" / "sidecar.lock", what=f"the Nix sidecar of {state_dir}")


def users_lock(state_dir: Path) -> FileLock:
    return FileLock(state_dir / "locks" / "sidecar-users.lock", what="the Nix sidecar's tasks")


def read_state(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _write_state(path: Path, fields: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{k}={v}\n" for k, v in fields.items()), encoding="utf-8")
    os.replace(tmp, path)


def alive(state: dict[str, str]) -> bool:
    """The cheap check: the sidecar's conmon still runs for that container id."""
    pid, cid = state.get("conmon_pid", ""), state.get("container_id", "")
    if not pid.isdigit() or not cid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return cid.encode() in f.read()
    except OSError:
        return False


def ensure(plan: SidecarPlan, runner: Runner) -> str:
    """Reuse the running sidecar or start one; 'reused' or 'started'. Hold ``setup_lock``."""
    state = read_state(plan.state_file)
    if state.get("image") == plan.image and alive(state):
        return "reused"
    teardown(plan, runner)  # whatever a crash left: container, overlay, state
    for d in (plan.upper, plan.work, plan.merged):
        d.mkdir(parents=True, exist_ok=True)
    try:
        runner.run([*plan.userns, "sh", "-c", plan.mount_script()])
        runner.run(plan.run.argv())
        waited = runner.run([*plan.userns, "sh", "-c", plan.wait_script()], check=False)
        if waited.returncode != 0:
            logs = runner.run(podman.logs(plan.name, debug=plan.debug), check=False)
            said = "\n".join(podman.tool_messages(logs.stderr)).strip()  # the sidecar's own
            raise PodmanError(
                f"the Nix sidecar {plan.name} did not open its daemon socket within 10 s"
                + (f":\n  {said or logs.stdout.strip()}" if logs.returncode == 0 else ""),
                hint="check that the image has nix-daemon (agentbox image build) and rerun with "
                "--debug",
            )
        info = runner.run(podman.container_state(plan.name, debug=plan.debug)).stdout.split()
    except BaseException:
        teardown(plan, runner)
        raise
    _write_state(plan.state_file, {"name": plan.name, "image": plan.image,
                                   "conmon_pid": info[1], "container_id": info[2]})  # fmt: skip
    return "started"


def teardown(plan: SidecarPlan, runner: Runner) -> None:
    """Remove the sidecar container and the overlay (in the namespace it lives in)."""
    runner.run(podman.remove(plan.name, debug=plan.debug), check=False)
    runner.run([*plan.userns, "sh", "-c", plan.unmount_script()], check=False)
    plan.state_file.unlink(missing_ok=True)


def tasks_running(plan: SidecarPlan, runner: Runner) -> bool:
    """Whether Podman knows a task of this sidecar; raises when it cannot say (fail closed)."""
    from agentbox_podman.query import api_socket, containers_with_labels

    labels = [(podman.SIDECAR_LABEL, plan.name)]
    found = containers_with_labels(labels, runner, api=api_socket(os.environ), debug=plan.debug)
    return bool(found)


REMOVED, IN_USE, ORPHANS, UNKNOWN = "removed", "in-use", "orphans", "unknown"


def remove_if_idle(plan: SidecarPlan, state_dir: Path, runner: Runner) -> str:
    """Remove the sidecar when no task uses it. Returns ``removed``; ``in-use`` when an agentbox
    task holds it (that task removes it later); ``orphans`` when only task containers whose
    agentbox died still run; ``unknown`` when Podman could not say (nothing removed)."""
    setup, users = setup_lock(state_dir), users_lock(state_dir)
    try:
        setup.acquire(wait=30)
    except AgentboxError:
        return IN_USE
    try:
        try:
            users.acquire()
        except AgentboxError:
            return IN_USE
        try:
            if tasks_running(plan, runner):
                return ORPHANS
            teardown(plan, runner)
            return REMOVED
        finally:
            users.release()
    except PodmanError:
        return UNKNOWN
    finally:
        setup.release()


def schedule_removal(state_dir: Path, plan: SidecarPlan, grace: int, runner: Runner) -> None:
    """A detached reaper that removes the sidecar ``grace`` seconds from now if still idle;
    under ``--debug`` it runs with ``--debug`` too (its commands go to its log)."""
    debug = ["--debug"] if plan.debug else []
    argv = [sys.executable, "-m", "agentbox_cli", *debug, "internal", "sidecar-reap", "--",
            str(state_dir), plan.image, str(grace)]  # fmt: skip
    # the reaper is this program again: it needs whatever made it importable here
    env = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}
    runner.detach(argv, log=state_dir / "sidecar-reaper.log", env=env)


ORPHAN_RETRY_SECONDS = 2.0
ORPHAN_PATIENCE_SECONDS = 3600.0


def reap(plan: SidecarPlan, state_dir: Path, grace: int, runner: Runner) -> int:
    """Wait out the grace, then remove the sidecar if idle; while only orphaned task containers
    (from a killed agentbox) still run, keep checking until they are gone."""
    time.sleep(grace)
    deadline = time.monotonic() + ORPHAN_PATIENCE_SECONDS
    while True:
        outcome = remove_if_idle(plan, state_dir, runner)
        if outcome != ORPHANS or time.monotonic() > deadline:
            return 0 if outcome in (REMOVED, IN_USE) else 1
        time.sleep(ORPHAN_RETRY_SECONDS)
