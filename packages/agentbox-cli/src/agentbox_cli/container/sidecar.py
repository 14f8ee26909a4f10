"""The Nix sidecar's lifecycle: start or reuse it, and remove it once idle.

Two lock files in the workspace's ``locks`` dir keep this safe without asking Podman on the
hot path: ``sidecar.lock`` (exclusive) guards starting and removing; every running task holds
``sidecar-users.lock`` shared. Removal needs both exclusively, so it can never happen while a
task runs, and a task that was killed releases its share with its process. Before removing,
Podman is still asked for running tasks of this sidecar (a task container can outlive a killed
agentbox); if that question cannot be answered, nothing is removed.

The sidecar belongs to an image ID: the hot path reuses it while Podman's image index file is
unchanged since the ID was read (one ``stat``); otherwise ``podman image inspect`` says the
tag's ID, and a different one replaces the sidecar once the project's running tasks have ended
(the new run waits for ``sidecar-users.lock``, holding ``sidecar.lock`` so no task joins the old
one meanwhile). A cold start mounts the overlay (checking the image has what container mode
needs), then starts the sidecar container alongside the task (``start``, still holding
``sidecar.lock``); the task holds its share of ``sidecar-users.lock`` from before it starts.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from agentbox_cli.container.imagefacts import FactsCache, ImageFacts, store_stamp
from agentbox_cli.container.plan import (
    CONTRACT_EXIT,
    GUEST_INIT,
    NIX_SOCKET,
    SIDECAR_ENTRYPOINT,
    SidecarPlan,
    overlay_grace,
)
from agentbox_podman import podman
from agentbox_podman.errors import PodmanError
from agentbox_state.errors import AgentboxError, CommandError
from agentbox_state.lock import FileLock
from agentbox_state.runner import Runner, command_failed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from loftd.snapshot.hooks import StateHooks


def setup_lock(state_dir: Path) -> FileLock:
    return FileLock(state_dir / "locks" / "sidecar.lock", what=f"the Nix sidecar of {state_dir}")


def users_lock(state_dir: Path) -> FileLock:
    return FileLock(state_dir / "locks" / "sidecar-users.lock", what="the Nix sidecar's tasks")


def snapshot_hooks() -> StateHooks:
    """What ``agentbox snapshot`` keeps out and reads of container mode: a starting task waits
    for ``sidecar.lock``; ``sidecar-users.lock``, taken exclusively, means no task runs; the
    state record names the image the sidecar ran and whether its overlay is kept mounted."""
    from loftd.snapshot.hooks import StateHooks

    def locks(state_dir: Path) -> list[FileLock]:
        return [setup_lock(state_dir), users_lock(state_dir)] if (state_dir / "nix").is_dir() \
            else []  # fmt: skip

    def recorded(state_dir: Path) -> dict[str, str]:
        try:
            return read_state(state_dir / "nix-sidecar.state")
        except AgentboxError:
            return {}

    return StateHooks(locks=locks, recorded=recorded, stop="agentbox stop")


# The state file's keys (a JSON record, agentbox_state.recordfile), each a string; written in
# stages (before the mount, then once the container runs), so none is required.
STATE_KEYS = ("name", "image", "image_id", "mounted", "conmon_pid", "container_id",
              "store_index", "store_stamp", "fuse_pid", "retired")  # fmt: skip


def read_state(path: Path) -> dict[str, str]:
    """The sidecar's state record; empty when there is none. One that is not a record is an
    error naming the file (it is written whole, so only another writer leaves such a file)."""
    from agentbox_state import recordfile

    found = recordfile.read(
        path, what="Nix sidecar state", fields=dict.fromkeys(STATE_KEYS, str),
        hint="remove it and the sidecar (podman rm --force the agentbox-nix-* container of "
        "this project), then run again",
    )  # fmt: skip
    return {key: str(value) for key, value in (found or {}).items()}


def _write_state(path: Path, fields: dict[str, str]) -> None:
    from agentbox_state import recordfile

    recordfile.write(path, fields)


def alive(state: dict[str, str]) -> bool:
    """The cheap check: the sidecar's conmon still runs for that container id."""
    return _runs(state.get("conmon_pid", ""), state.get("container_id", ""))


def _runs(pid: str, marker: str) -> bool:
    """Process ``pid`` runs with ``marker`` in its command line (one read of /proc)."""
    if not pid.isdigit() or not marker:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False


def fuse_process(merged: Path) -> str:
    """The pid of the fuse-overlayfs serving ``merged`` (it daemonizes, so it is looked up by
    its command line, ending in that mount point); empty when there is none."""
    tail = b"\0" + os.fsencode(merged) + b"\0"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if cmdline.endswith(tail) and b"fuse-overlayfs" in cmdline.split(b"\0", 1)[0]:
            return entry.name
    return ""


def _kept_overlay(state: dict[str, str], merged: Path) -> bool:
    """The overlay outlived its sidecar (retired by the reaper, which also removed the old
    daemon's socket) and its fuse-overlayfs still serves it."""
    return bool(state.get("retired")) and _runs(state.get("fuse_pid", ""), os.fspath(merged))


FUSE_HINT = "install it: apt-get install fuse-overlayfs (Debian/Ubuntu)"
IMAGE_HINT = (
    "build one with `agentbox image build` (localhost/agentbox:latest, the default), or base "
    "yours on it"
)
WAIT_FOR_TASKS_SECONDS = 3600.0


def _same_image(state: dict[str, str], image: str) -> bool:
    """The hot path's check, without Podman: the sidecar serves ``image`` and Podman's image
    index is unchanged since it was started (so the tag still names the same ID)."""
    stamp = state.get("store_stamp", "")
    return state.get("image") == image and bool(stamp) and \
        store_stamp(state.get("store_index", "")) == stamp  # fmt: skip


def check_fuse_overlayfs(runner: Runner) -> None:
    try:
        done = runner.run(["fuse-overlayfs", "--version"], check=False)
    except CommandError as err:
        raise PodmanError(
            "container mode needs fuse-overlayfs for the project's /nix overlay, and it is not "
            "installed (or not on PATH)", hint=FUSE_HINT,
        ) from err  # fmt: skip
    if done.returncode == 127:
        raise PodmanError("container mode needs fuse-overlayfs, and it cannot be run",
                          hint=FUSE_HINT)  # fmt: skip


def contract_error(image: str, facts: ImageFacts, missing: list[str]) -> PodmanError:
    """Why the image cannot serve container mode (pure)."""
    what = {
        "/nix": "no /nix (the Nix store the sidecar serves)",
        GUEST_INIT: f"no guest init ({GUEST_INIT})",
        SIDECAR_ENTRYPOINT: f"no Nix sidecar entry point ({SIDECAR_ENTRYPOINT})",
    }
    reasons = [what.get(m, f"no {m}") for m in missing]
    if not any(w.endswith("agentbox-guest-init") for w in facts.entrypoint[:1]):
        shown = " ".join(facts.entrypoint) or "none"
        reasons.append(f"its entry point is not the guest init (it is {shown})")
    return PodmanError(
        f"image {image} ({facts.id[:12]}) cannot run in container mode: it has "
        + "; ".join(reasons), hint=IMAGE_HINT,
    )  # fmt: skip


class Prepared(NamedTuple):
    """What ``ensure`` left: ``reused`` (running) or ``starting`` (the overlay is mounted,
    ``start`` runs the sidecar container)."""

    status: str
    facts: ImageFacts | None = None


def ensure(plan: SidecarPlan, runner: Runner, *, say: Callable[[str], None],
           cache: FactsCache | None = None) -> Prepared:  # fmt: skip
    """Reuse the running sidecar of the same image ID, or mount the overlay of a new one (then
    ``start`` it). Hold ``setup_lock``. A sidecar of another image is replaced only once no
    task uses it: this waits for the project's running tasks, saying so with ``say``."""
    state = read_state(plan.state_file)
    running = alive(state)
    if running and _same_image(state, plan.image):
        return Prepared("reused")
    kept = not running and _kept_overlay(state, plan.merged)
    if not kept:
        check_fuse_overlayfs(runner)
    known_index = state.get("store_index", "")
    if cache is None:
        cache = FactsCache(runner, debug=plan.debug, known_index=known_index)
    facts = cache.facts(plan.image)  # asked already by the image lookup, or now
    if kept and state.get("mounted") == facts.id:
        _write_state(plan.state_file, {**state, "image": plan.image, "retired": ""})
        return Prepared("starting", facts)  # checked when it was mounted
    if kept:
        check_fuse_overlayfs(runner)
    if running and state.get("image_id") == facts.id:
        _write_state(plan.state_file, {**state, "image": plan.image,
                     "store_index": facts.store_index,
                     "store_stamp": facts.store_stamp})  # fmt: skip
        return Prepared("reused")
    if running:
        _replace_when_idle(plan, state, facts, runner, say)
    if state or plan.state_file.exists():
        # whatever a crash left: container, overlay, state. The state file is written before
        # anything is mounted or started and removed last, so without one there is nothing.
        teardown(plan, runner)
    for d in (plan.upper, plan.work, plan.merged):
        d.mkdir(parents=True, exist_ok=True)
    # recorded first: whatever happens next, teardown unmounts this image by its ID
    _write_state(plan.state_file, {"name": plan.name, "image": plan.image,
                                   "image_id": facts.id, "mounted": facts.id,
                                   "store_index": facts.store_index})  # fmt: skip
    try:
        mounted = runner.run([*plan.userns, "sh", "-c", plan.mount_script(facts.id)], check=False)
        if mounted.returncode == CONTRACT_EXIT and mounted.stdout.startswith("missing:"):
            raise contract_error(plan.image, facts, mounted.stdout.split()[1:])
        if mounted.returncode != 0:
            raise command_failed([*plan.userns, "sh", "-c", plan.mount_script(facts.id)],
                                 mounted.returncode, mounted.stderr)  # fmt: skip
        if not any(w.endswith("agentbox-guest-init") for w in facts.entrypoint[:1]):
            raise contract_error(plan.image, facts, [])
        _write_state(plan.state_file, {**read_state(plan.state_file),
                                       "fuse_pid": fuse_process(plan.merged)})  # fmt: skip
    except BaseException:
        teardown(plan, runner)
        raise
    return Prepared("starting", facts)


def _replace_when_idle(plan: SidecarPlan, state: dict[str, str], facts: ImageFacts,
                       runner: Runner, say: Callable[[str], None]) -> None:  # fmt: skip
    """Wait until no task of the project uses the old image's sidecar (holding ``setup_lock``,
    so no new one joins it); fails when only task containers of a killed agentbox remain."""
    users = users_lock(plan.state_file.parent)
    old = state.get("image_id", "")[:12] or "an older image"
    say(f"{plan.image} is now image {facts.id[:12]}, but the project's Nix sidecar serves "
        f"{old}: waiting for the project's running tasks to end, then replacing it "
        "(Ctrl-C stops waiting)")  # fmt: skip
    users.acquire(wait=WAIT_FOR_TASKS_SECONDS)
    try:
        if tasks_running(plan, runner):
            raise PodmanError(
                f"task containers of the Nix sidecar {plan.name} still run, though no agentbox "
                "uses them", hint=f"stop them: podman ps --filter label="
                f"{podman.SIDECAR_LABEL}={plan.name}, then podman rm --force NAME",
            )  # fmt: skip
    finally:
        users.release()


def start(plan: SidecarPlan, runner: Runner, facts: ImageFacts) -> None:
    """Run the sidecar container (the image by ID) on the mounted overlay; no wait for its
    daemon (the task's first use of Nix waits). Hold ``setup_lock``; tears down on failure."""
    try:
        plan.conmon_pidfile.unlink(missing_ok=True)
        out = runner.run(plan.run_argv(facts.id)).stdout.split()
        try:
            pid = plan.conmon_pidfile.read_text(encoding="ascii").strip()
        except OSError:
            pid = ""
        if not out or not pid.isdigit():
            raise PodmanError(f"the Nix sidecar {plan.name} started, but podman did not say its "
                              f"container id and conmon pid (got {out!r}, {pid!r})")  # fmt: skip
    except BaseException:
        teardown(plan, runner)
        raise
    _write_state(plan.state_file, {
        "name": plan.name, "image": plan.image, "image_id": facts.id, "mounted": facts.id,
        "conmon_pid": pid, "container_id": out[-1], "store_index": facts.store_index,
        "store_stamp": facts.store_stamp,  # as of the inspect: a later change is seen
        "fuse_pid": read_state(plan.state_file).get("fuse_pid", ""),
    })  # fmt: skip


def teardown(plan: SidecarPlan, runner: Runner) -> None:
    """Remove the sidecar container and the overlay (in the namespace it lives in), and
    unmount the image it was made from (by ID when the state says which). The state record
    goes only once Podman has removed the container: while Podman cannot answer (its rootless
    state broken, say), the record stays so the next run tears down again."""
    mounted = read_state(plan.state_file).get("mounted") or None
    removed = runner.run(podman.remove(plan.name, debug=plan.debug), check=False)
    runner.run([*plan.userns, "sh", "-c", plan.unmount_script(mounted)], check=False)
    plan.conmon_pidfile.unlink(missing_ok=True)
    if removed.returncode == 0:
        plan.state_file.unlink(missing_ok=True)


def retire(plan: SidecarPlan, runner: Runner, token: str) -> bool:
    """Remove the sidecar container but keep its overlay mounted (with the old daemon's socket
    removed, so a task started beside the next sidecar waits for the new one); the state
    says ``retired`` by ``token``. False (and a whole teardown) when the overlay is not
    served any more or Podman cannot remove the container."""
    state = read_state(plan.state_file)
    fuse = state.get("fuse_pid", "")
    if not _runs(fuse, os.fspath(plan.merged)):
        teardown(plan, runner)
        return False
    if runner.run(podman.remove(plan.name, debug=plan.debug), check=False).returncode != 0:
        teardown(plan, runner)
        return False
    socket = os.fspath(plan.merged) + NIX_SOCKET.removeprefix("/nix")
    gone = runner.run([*plan.userns, "rm", "-f", socket], check=False)
    if gone.returncode != 0:
        teardown(plan, runner)
        return False
    plan.conmon_pidfile.unlink(missing_ok=True)
    _write_state(plan.state_file, {**state, "conmon_pid": "", "container_id": "",
                                   "retired": token})  # fmt: skip
    return True


def defer(plan: SidecarPlan) -> None:
    """The task ended before its sidecar was started: keep the overlay mounted as a retired
    one (no reaper's token), which the next start reuses and the next reaper retires again."""
    state = read_state(plan.state_file)
    if state and not alive(state):
        _write_state(plan.state_file, {**state, "retired": f"deferred@{os.getpid()}"})


def tasks_running(plan: SidecarPlan, runner: Runner) -> bool:
    """Whether Podman knows a task of this sidecar; raises when it cannot say (fail closed)."""
    from agentbox_podman.query import api_socket, containers_with_labels

    labels = [(podman.SIDECAR_LABEL, plan.name)]
    found = containers_with_labels(labels, runner, api=api_socket(os.environ), debug=plan.debug)
    return bool(found)


REMOVED, RETIRED, IN_USE, ORPHANS, UNKNOWN = "removed", "retired", "in-use", "orphans", "unknown"


def remove_if_idle(plan: SidecarPlan, state_dir: Path, runner: Runner, *,
                   retire_as: str = "") -> str:  # fmt: skip
    """Remove the sidecar when no task uses it (with ``retire_as``, only its container, the
    overlay kept: ``retired``, taken over from a reaper that retired it before). Returns
    ``removed``; ``in-use`` when an agentbox task holds it (that task removes it later);
    ``orphans`` when only task containers whose agentbox died still run; ``unknown`` when
    Podman could not say (nothing removed)."""
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
            # a kept overlay another reaper retired is taken over: the newest reaper unmounts it
            if retire_as and retire(plan, runner, retire_as):
                return RETIRED
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
    """Wait out the grace, then remove the sidecar's container if idle, keeping its overlay
    for ``overlay_grace`` (a grace of 0 removes both now); while only orphaned task containers
    (from a killed agentbox) still run, keep checking until they are gone. Then, unless a
    new sidecar took the overlay meanwhile, unmount it."""
    time.sleep(grace)
    keep = overlay_grace(grace) - grace
    token = f"{os.getpid()}@{time.time():.0f}" if keep > 0 else ""
    deadline = time.monotonic() + ORPHAN_PATIENCE_SECONDS
    while True:
        outcome = remove_if_idle(plan, state_dir, runner, retire_as=token)
        if outcome != ORPHANS or time.monotonic() > deadline:
            break
        time.sleep(ORPHAN_RETRY_SECONDS)
    if outcome != RETIRED:
        return 0 if outcome in (REMOVED, IN_USE) else 1
    time.sleep(keep)
    return 0 if unmount_if_retired(plan, state_dir, token, runner) != UNKNOWN else 1


def unmount_if_retired(plan: SidecarPlan, state_dir: Path, token: str, runner: Runner) -> str:
    """Unmount the overlay this reaper retired (``token``), unless a sidecar uses it again."""
    setup = setup_lock(state_dir)
    try:
        setup.acquire(wait=30)
    except AgentboxError:
        return IN_USE
    try:
        state = read_state(plan.state_file)
        if state.get("retired") != token or alive(state):
            return IN_USE
        teardown(plan, runner)
        return REMOVED
    except PodmanError:
        return UNKNOWN
    finally:
        setup.release()
