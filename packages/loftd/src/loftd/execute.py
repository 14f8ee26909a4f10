"""Carrying out a ``TaskPlan``: the kvm check first, then the image cache (ingest on a miss), the
/nix overlay's probe, garbage of killed runs, the task dir and its lock, the task root, the guest
init, the leased disks, launch.conf, the helper, and the guest's verdict on the status.

Cleanup of the task root and its state dir always runs, even when the helper fails, unless the
plan preserves them: the exact commands to remove them later are printed instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from agentbox_krun import kvm, launchconf
from agentbox_krun.helper import STATUS_NAME, describe, outcome
from agentbox_krun.launchconf import LaunchConf
from agentbox_state.errors import AgentboxError
from agentbox_state.lock import FileLock
from agentbox_state.profile import Profiler
from agentbox_state.runner import Runner
from agentbox_storage import disks, taskroot
from agentbox_storage.backends import Backend
from agentbox_storage.imagecache import ImageCache, check_guest_init
from loftd import guest
from loftd.facts import keep
from loftd.plan import TaskPlan
from loftd.runtime import PhaseError, phase

Notice = Callable[[str], None]
GC_MIN_AGE = 60.0  # seconds: a task dir this young may still be getting its lock


def execute(plan: TaskPlan, runner: Runner, profiler: Profiler, notice: Notice) -> int:
    """The whole run; returns the guest command's exit status."""
    if plan.kvm is not None:  # before anything is created
        kvm.check({}, plan.env_prefix, plan.name, facts=plan.kvm)
    if plan.remember is not None:  # the run goes ahead: the next one need not ask Buildah
        keep(plan.remember)
    with phase(profiler, "image_cache_ensure", f"{plan.name} image cache ingestion"):
        source = _ensure_image(plan, runner)
    launch = plan.launch
    if plan.nix_overlay is not None:  # before the task root: a second task stops here, early
        with phase(profiler, "nix_overlay_preparation", f"{plan.name} /nix overlay preparation"):
            nix = plan.nix_overlay._replace(lower=os.fspath(source / "nix"))
            _prepare_nix_overlay(plan, source, nix)
            launch = launch._replace(nix_overlay=nix)
    with profiler.phase("task_garbage_collection"):
        _collect_garbage(plan, runner, notice)
    return _in_task_root(plan, launch, source, runner, profiler, notice)


def _ensure_image(plan: TaskPlan, runner: Runner) -> Path:
    """The cached rootfs: the hit's, or the one the ingest child made."""
    if plan.ingest is None and plan.source is not None:
        return plan.source
    argv = list(plan.ingest or ())
    cache = ImageCache(plan.images_dir)
    return cache.ensure(plan.image, runner, ingest_argv=lambda _ref, _pinned: argv,
                        look=False)[0].rootfs  # fmt: skip


def _in_task_root(plan: TaskPlan, launch: LaunchConf, source: Path, runner: Runner,
                  profiler: Profiler, notice: Notice) -> int:  # fmt: skip
    """Task root → guest init → disks → launch.conf → helper, then cleanup, always."""
    task_dir = plan.task_dir
    lock = taskroot.task_lock(task_dir)
    task_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire(shared=True)  # shared with the helper (the VM), which holds it too
        if plan.preserve:  # kept even if this run is killed before its cleanup says so
            (task_dir / taskroot.PRESERVED_NAME).write_text("kept by --preserve-debug\n")
    except BaseException:
        with contextlib.suppress(OSError):
            task_dir.rmdir()  # only if empty: nothing of another run's is touched
        raise
    made: list[taskroot.TaskRoot] = []  # the task root, once there is one
    try:
        code = _launch(plan, launch, source, runner, profiler, made)
    except BaseException as failure:
        _clean_up_after(plan, runner, profiler, made, lock, notice, failure=failure)
        raise
    _clean_up_after(plan, runner, profiler, made, lock, notice, exit_status=code)
    return code


def _clean_up_after(
    plan: TaskPlan, runner: Runner, profiler: Profiler, made: list[taskroot.TaskRoot],
    lock: FileLock, notice: Notice, *, failure: BaseException | None = None,
    exit_status: int = 0,
) -> None:  # fmt: skip
    """Remove the task root and its state (or keep them with --preserve-debug). A cleanup that
    fails after the run failed reports both; after the run ended, it names the run's status."""
    task_dir = plan.task_dir
    try:
        with profiler.phase("task_state_cleanup"):
            root = made[0] if made else taskroot.layout(Backend.BTRFS_SNAPSHOT, task_dir)
            kept = taskroot.cleanup(root, runner, userns=plan.userns, preserve=plan.preserve)
            if kept:
                notice(f"{plan.name}: kept {task_dir} for debugging; remove it with:\n  "
                       + "\n  ".join(kept))  # fmt: skip
    except AgentboxError as err:
        what = f"{plan.name}: cleaning up the task {task_dir} failed: {err.message}"
        if isinstance(failure, AgentboxError):
            hints = "; ".join(h for h in (failure.hint, err.hint) if h) or None
            raise PhaseError(f"{failure.message}\n{what}", hint=hints,
                             exit_code=failure.exit_code) from err  # fmt: skip
        if failure is not None:  # an interrupt, or a bug: it goes on, but not silently
            notice(f"{what}" + (f"\n  hint: {err.hint}" if err.hint else ""))
            return
        ended = f" (the command itself exited {exit_status})" if exit_status else ""
        raise PhaseError(what + ended, hint=err.hint, exit_code=exit_status or 1) from err
    finally:
        lock.release()  # after cleanup: nobody else takes a half-removed task dir


def _launch(plan: TaskPlan, launch: LaunchConf, source: Path, runner: Runner,
            profiler: Profiler, made: list[taskroot.TaskRoot]) -> int:  # fmt: skip
    """Task root → guest init → disks → launch.conf → helper; the guest command's status."""
    label = f"{plan.name} task rootfs materialization"
    with phase(profiler, "task_rootfs_materialization", label):
        root = taskroot.materialize_first(plan.backends, source, plan.task_dir, runner,
                                          userns=plan.userns)  # fmt: skip
    made.append(root)
    profiler.meta("storage_mode", root.backend.value)
    with phase(profiler, "guest_init_resolution", f"{plan.name} guest-init resolution"):
        exec_path = _guest_init(plan, root)
    with ExitStack() as stack:
        with phase(profiler, "persistent_disk_preparation",
                   f"{plan.name} persistent disk preparation"):  # fmt: skip
            for spec, path in plan.disks:
                stack.enter_context(disks.open_disk(path, spec, runner))
        conf = launch._replace(task_rootfs=os.fspath(root.rootfs), exec_path=exec_path)
        with profiler.phase("launch_config_build"):
            launchconf.write(conf, plan.conf_path)
        with profiler.phase("helper_session"):
            (plan.task_dir / STATUS_NAME).unlink(missing_ok=True)
            guest.status_file(root.rootfs).unlink(missing_ok=True)
            code = runner.interactive(list(plan.helper_argv), env=dict(plan.helper_env))
        stopped = outcome(plan.task_dir)
        if stopped is None:  # libkrun took over: did the guest say how its command ended?
            report = guest.read(root.rootfs)
            return guest.verdict(plan.name, report, code, preserve=plan.preserve)
        if stopped == "lease":
            hint = "its own message above names the task holding it: wait for it to end"
        elif plan.preserve:
            hint = "its own message is above"
        else:
            hint = ("its own message is above; rerun with --preserve-debug to keep the task "
                    "root and launch.conf for a look")  # fmt: skip
        raise PhaseError(
            f"{plan.name}: the libkrun helper failed while {describe(stopped)} (exit status "
            f"{code})", hint=hint, exit_code=code or 1,
        )  # fmt: skip


def _collect_garbage(plan: TaskPlan, runner: Runner, notice: Notice) -> None:
    """Remove what killed runs of this project left (task roots whose command line and VM
    helper are both gone); a failure here is a warning, not the end of this run."""

    def warn(task_dir: Path, err: AgentboxError) -> None:
        hint = f"\n  hint: {err.hint}" if err.hint else ""
        notice(f"{plan.name}: warning: could not remove {task_dir}, left by a killed run: "
               f"{err.message}{hint}")  # fmt: skip

    removed = taskroot.collect_garbage(plan.task_dir.parent, runner, userns=plan.userns,
                                       min_age=GC_MIN_AGE, on_error=warn)  # fmt: skip
    if removed:
        names = ", ".join(p.name for p in removed)
        notice(f"{plan.name}: removed {len(removed)} task root(s) left by killed runs: {names}")


def _prepare_nix_overlay(plan: TaskPlan, source: Path, nix: launchconf.NixOverlay) -> None:
    """Two overlays on one upper corrupt it (the kernel only warns), so the helper holds the
    lease for as long as the VM runs; here it is only probed, to stop a second task before
    anything is made for it (a race past the probe still stops at the helper's own lock)."""
    lower = source / "nix"
    if not lower.is_dir() or lower.is_symlink():
        raise AgentboxError(
            f"image {plan.image} has no /nix directory to put under the /nix overlay",
            hint="use an image built by 'agentbox image build' (it carries /nix)",
        )
    from agentbox_krun.nsmount import overlay_options

    base = Path(nix.lease).parent
    overlay_options(nix)  # paths overlayfs cannot take are refused before anything is made
    probe = FileLock(nix.lease, what=f"the /nix overlay {base}")
    probe.acquire()
    probe.release()
    for d in (nix.upper, nix.work):
        Path(d).mkdir(parents=True, exist_ok=True)


def _guest_init(plan: TaskPlan, root: taskroot.TaskRoot) -> str:
    found = check_guest_init(plan.image, root.rootfs, plan.guest_init)
    if plan.guest_init_override is not None:
        shutil.copy2(plan.guest_init_override, found)  # replaces the file in the task root only
    return "/" + os.path.relpath(found, root.rootfs)
