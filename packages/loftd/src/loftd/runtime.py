"""The direct-libkrun task runtime, shared by `agentbox microvm` and `loftd`.

One pipeline, parameterised by a ``Face`` (what differs between the two: names, guest init,
disks, environment contract, library variable). Each phase is named in the profile and in the
error that ends a run:

    image reference → image cache (ingest on a miss) → backend selection → task root →
    guest init → [host /nix overlay] → persistent disks (leased) → launch.conf → helper
    process → cleanup

Cleanup of the task root and its state dir always runs, even when the helper fails, unless
``preserve`` is set, which returns the exact commands to remove them later.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from agentbox_krun import kvm, launchconf
from agentbox_krun.errors import KrunLoadError
from agentbox_krun.ffi import load
from agentbox_krun.helper import STATUS_NAME, describe, outcome
from agentbox_krun.launchconf import Disk, LaunchConf, Mount, NixOverlay
from agentbox_state.errors import AgentboxError
from agentbox_state.lock import FileLock
from agentbox_state.profile import Profiler
from agentbox_state.runner import Runner
from agentbox_storage import disks, taskroot
from agentbox_storage.backends import Backend
from agentbox_storage.disks import DiskSpec
from agentbox_storage.imagecache import ImageCache, check_guest_init, pinned_digest
from loftd import guest


@dataclass(frozen=True, slots=True, kw_only=True)
class Face:
    """What makes the runtime `agentbox microvm` or `loftd`."""

    name: str  # for messages and the profile title
    library_env: str  # AGENTBOX_LIBKRUN_LIBRARY / LOFTD_LIBKRUN_LIBRARY
    env_prefix: str  # AGENTBOX_ / LOFTD_
    guest_init: str  # path inside the image, e.g. bin/agentbox-guest-init
    guest_argv: tuple[str, ...]  # argv before the user's command
    disks: tuple[DiskSpec, ...]
    workspace_tag: str
    extra_env: tuple[str, ...] = ()  # the disk contract the guest init reads
    # loftd: /nix is a kernel overlay on the host (the image's /nix below, a persistent upper in
    # <state>/nix-overlay), mounted by the helper on the task root's /nix; agentbox microvm
    # instead gives the guest a /nix disk and the guest init makes the overlay
    nix_host_overlay: bool = False
    # agentbox microvm: the workspace over virtiofs (the guest init mounts the tag); loftd: the
    # helper bind-mounts it into the root, and libkrun's logger and nested-virt check are the
    # ones loftd uses (krun_init_log, krun_check_nested_virt)
    workspace_virtiofs: bool = True
    loftd_calls: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRequest:
    image: str
    backend: Backend
    workspace: Path
    state_dir: Path  # the workspace's own dir
    images_dir: Path  # the per-user image cache
    task_id: str
    command: tuple[str, ...]
    uid: int
    gid: int
    ram_mib: int
    vcpus: int
    root: bool = False
    preserve: bool = False
    pull: str = "never"  # Buildah's policy: never, missing, or always (ingest even on a hit)
    guest_init_override: Path | None = None
    profile: bool = False  # with debug: the guest init prints its own profile report
    debug: bool = False


class PhaseError(AgentboxError):
    pass


@contextmanager
def _phase(profiler: Profiler, name: str, label: str) -> Iterator[None]:
    """A profiled phase; an error says which phase failed."""
    with profiler.phase(name):
        try:
            yield
        except PhaseError:
            raise
        except AgentboxError as err:
            raise PhaseError(f"{label} failed: {err.message}", hint=err.hint) from err


def helper_in_userns(face: Face, req: TaskRequest) -> bool:
    """Whether the helper runs inside ``buildah unshare``: rootless, with mounts to make (the
    grafts need a mount namespace, and the /nix overlay's lower layer is the cache, whose files
    only make sense in the user namespace that wrote them; as the original did)."""
    return req.uid != 0 and (face.nix_host_overlay or not face.workspace_virtiofs)


def guest_env(face: Face, req: TaskRequest) -> tuple[str, ...]:
    p = face.env_prefix
    env = []
    if face.workspace_virtiofs:
        env.append(f"{p}MICROVM_WORKSPACE_TAG={face.workspace_tag}" if p == "AGENTBOX_"
                   else f"{p}WORKSPACE_TAG={face.workspace_tag}")  # fmt: skip
    if req.uid != 0:
        env += [f"{p}HOST_UID={req.uid}", f"{p}HOST_GID={req.gid}"]
    # in the user namespace the host's you is root, and so owns the grafted workspace: the
    # guest's shell is root too, so what it writes there is yours on the host
    if req.root or req.uid == 0 or helper_in_userns(face, req):
        env.append(f"{p}ENTER_AS_ROOT=1")
    env.append(f"{p}GUEST_STATUS_FILE={guest.STATUS_PATH}")
    if req.profile:
        env.append(f"{p}GUEST_PROFILE=1")
    if req.debug:
        env.append(f"{p}GUEST_DEBUG=1")
    return (*env, *face.extra_env)


# What the helper (the user's own VMM process) inherits beyond the runner's usual few: how the
# dynamic loader finds libkrun's own dependencies (libkrun opens libkrunfw.so.N by name when the
# VM starts, so a library found through LD_LIBRARY_PATH here must be found there too) and
# libkrun's logging filter (RUST_LOG; krun_init_log with NO_ENV ignores it).
HELPER_PASSTHROUGH = ("LD_LIBRARY_PATH", "LD_PRELOAD", "RUST_LOG")


def helper_env(face: Face, library: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The helper's extra environment (pure): the library this process found, and the user's
    loader and logging variables."""
    env = {k: environ[k] for k in HELPER_PASSTHROUGH if environ.get(k)}
    env[face.library_env] = library
    return env


def run_task(
    face: Face,
    req: TaskRequest,
    runner: Runner,
    profiler: Profiler,
    *,
    ingest_argv: Callable[[str, str | None], list[str]],
    local_digest: Callable[[str], str | None],
    helper_argv: Sequence[str],
    environ: dict[str, str],
    notice: Callable[[str], None],
) -> int:
    """The whole run; returns the guest command's exit status."""
    from agentbox_podman import buildah

    # Buildah's user namespace (rootless) for the snapshot, cleanup and the grafting helper
    userns = tuple(buildah.unshare(debug=req.debug)) if req.uid != 0 else ()
    profiler.meta("image", req.image)
    profiler.meta("task", req.task_id)
    try:  # before anything is created: is there a libkrun at all?
        library = load(environ, face.library_env).name
    except KrunLoadError as err:
        raise PhaseError(f"{face.name} needs libkrun: {err.message}", hint=err.hint) from err
    with profiler.phase("kvm_check"):
        kvm.check(environ, face.env_prefix, face.name)
    cache = ImageCache(req.images_dir)
    with _phase(profiler, "image_reference_resolution", f"{face.name} image reference resolution"):
        found = None  # --pull-latest: always ingest (Buildah pulls), whatever is cached
        if req.pull != "always":
            current = None if pinned_digest(req.image) else local_digest(req.image)
            found = cache.lookup(req.image, current=current)
        profiler.meta("image_cache", "hit" if found else "miss")
    with _phase(profiler, "image_cache_ensure", f"{face.name} image cache ingestion"):
        entry = found or cache.ensure(req.image, runner, ingest_argv=ingest_argv, look=False)[0]
    with _phase(profiler, "storage_backend_selection",
                f"{face.name} storage backend selection"):  # fmt: skip
        backends = taskroot.select(req.backend, entry.rootfs)
    nix = None
    if face.nix_host_overlay:  # before the task root: a second task stops here, early
        with _phase(profiler, "nix_overlay_preparation", f"{face.name} /nix overlay preparation"):
            nix = nix_overlay(req, entry.rootfs)
    return _in_task_root(face, req, runner, profiler, entry.rootfs, backends, nix, userns,
                         helper_argv=helper_argv, helper_env=helper_env(face, library, environ),
                         notice=notice)  # fmt: skip


def _in_task_root(
    face: Face, req: TaskRequest, runner: Runner, profiler: Profiler, source: Path,
    backends: Sequence[Backend], nix: NixOverlay | None, userns: tuple[str, ...], *,
    helper_argv: Sequence[str], helper_env: Mapping[str, str], notice: Callable[[str], None],
) -> int:  # fmt: skip
    """Task root → guest init → disks → launch.conf → helper, then cleanup, always."""
    with profiler.phase("task_garbage_collection"):
        _collect_garbage(face, req, runner, userns, notice)
    task_dir = req.state_dir / "tasks" / req.task_id
    lock = taskroot.task_lock(task_dir)
    task_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire(shared=True)  # shared with the helper (the VM), which holds it too
        if req.preserve:  # kept even if this run is killed before its cleanup says so
            (task_dir / taskroot.PRESERVED_NAME).write_text("kept by --preserve-debug\n")
    except BaseException:
        with contextlib.suppress(OSError):
            task_dir.rmdir()  # only if empty: nothing of another run's is touched
        raise
    made: list[taskroot.TaskRoot] = []  # the task root, once there is one
    try:
        code = _launch(
            face,
            req,
            runner,
            profiler,
            source,
            backends,
            nix,
            userns,
            task_dir,
            lock.path,
            made,
            helper_argv=helper_argv,
            helper_env=helper_env,
        )
    except BaseException as failure:
        _clean_up_after(face, req, runner, profiler, task_dir, made, userns, lock, notice,
                        failure=failure)  # fmt: skip
        raise
    _clean_up_after(face, req, runner, profiler, task_dir, made, userns, lock, notice,
                    exit_status=code)  # fmt: skip
    return code


def _clean_up_after(
    face: Face, req: TaskRequest, runner: Runner, profiler: Profiler, task_dir: Path,
    made: list[taskroot.TaskRoot], userns: tuple[str, ...], lock: FileLock,
    notice: Callable[[str], None], *, failure: BaseException | None = None,
    exit_status: int = 0,
) -> None:  # fmt: skip
    """Remove the task root and its state (or keep them with --preserve-debug). A cleanup that
    fails after the run failed reports both; after the run ended, it names the run's status."""
    try:
        with profiler.phase("task_state_cleanup"):
            root = made[0] if made else taskroot.layout(Backend.BTRFS_SNAPSHOT, task_dir)
            kept = taskroot.cleanup(root, runner, userns=userns, preserve=req.preserve)
            if kept:
                notice(f"{face.name}: kept {task_dir} for debugging; remove it with:\n  "
                       + "\n  ".join(kept))  # fmt: skip
    except AgentboxError as err:
        what = f"{face.name}: cleaning up the task {task_dir} failed: {err.message}"
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


def _launch(
    face: Face, req: TaskRequest, runner: Runner, profiler: Profiler, source: Path,
    backends: Sequence[Backend], nix: NixOverlay | None, userns: tuple[str, ...],
    task_dir: Path, lock_path: Path, made: list[taskroot.TaskRoot], *,
    helper_argv: Sequence[str], helper_env: Mapping[str, str],
) -> int:  # fmt: skip
    """Task root → guest init → disks → launch.conf → helper; the guest command's status."""
    label = f"{face.name} task rootfs materialization"
    with _phase(profiler, "task_rootfs_materialization", label):
        root = taskroot.materialize_first(backends, source, task_dir, runner, userns=userns)
    made.append(root)
    profiler.meta("storage_mode", root.backend.value)
    with _phase(profiler, "guest_init_resolution", f"{face.name} guest-init resolution"):
        exec_path = _guest_init(face, req, root)
    with ExitStack() as stack:
        disk_list = []
        with _phase(profiler, "persistent_disk_preparation",
                    f"{face.name} persistent disk preparation"):  # fmt: skip
            for spec in face.disks:
                path = req.state_dir / spec.file_name
                stack.enter_context(disks.open_disk(path, spec, runner))
                disk_list.append(Disk(spec.block_id, os.fspath(path), False))
        workspace = os.fspath(req.workspace)
        virtiofs = face.workspace_virtiofs
        conf = LaunchConf(
            task_rootfs=os.fspath(root.rootfs), ram_mib=req.ram_mib, vcpus=req.vcpus,
            workdir="/workspace", exec_path=str(exec_path),
            argv=(*face.guest_argv, *(req.command or ("fish", "-l"))),
            env=guest_env(face, req), disks=tuple(disk_list),
            workspace_source=workspace if virtiofs else None,
            workspace_tag=face.workspace_tag if virtiofs else None,
            workspace_target="/workspace" if virtiofs else None,
            mounts=() if virtiofs else (Mount(workspace, "/workspace", False),),
            nix_overlay=nix, init_log=face.loftd_calls, nested_virt=face.loftd_calls,
            task_lock=os.fspath(lock_path),
        )  # fmt: skip
        conf_path = task_dir / "launch.conf"
        with profiler.phase("launch_config_build"):
            launchconf.write(conf, conf_path)
        with profiler.phase("helper_session"):
            wrap = userns if helper_in_userns(face, req) else ()
            (task_dir / STATUS_NAME).unlink(missing_ok=True)
            guest.status_file(root.rootfs).unlink(missing_ok=True)
            code = runner.interactive([*wrap, *helper_argv, os.fspath(conf_path)],
                                      env=helper_env)  # fmt: skip
        phase = outcome(task_dir)
        if phase is None:  # libkrun took over: did the guest say how its command ended?
            report = guest.read(root.rootfs)
            return guest.verdict(face.name, report, code, preserve=req.preserve)
        if phase == "lease":
            hint = "its own message above names the task holding it: wait for it to end"
        elif req.preserve:
            hint = "its own message is above"
        else:
            hint = ("its own message is above; rerun with --preserve-debug to keep the task "
                    "root and launch.conf for a look")  # fmt: skip
        raise PhaseError(
            f"{face.name}: the libkrun helper failed while {describe(phase)} (exit status "
            f"{code})", hint=hint, exit_code=code or 1,
        )  # fmt: skip


GC_MIN_AGE = 60.0  # seconds: a task dir this young may still be getting its lock


def _collect_garbage(face: Face, req: TaskRequest, runner: Runner,
                     userns: tuple[str, ...], notice: Callable[[str], None]) -> None:  # fmt: skip
    """Remove what killed runs of this project left (task roots whose command line and VM
    helper are both gone); a failure here is a warning, not the end of this run."""

    def warn(task_dir: Path, err: AgentboxError) -> None:
        hint = f"\n  hint: {err.hint}" if err.hint else ""
        notice(f"{face.name}: warning: could not remove {task_dir}, left by a killed run: "
               f"{err.message}{hint}")  # fmt: skip

    removed = taskroot.collect_garbage(req.state_dir / "tasks", runner, userns=userns,
                                       min_age=GC_MIN_AGE, on_error=warn)  # fmt: skip
    if removed:
        names = ", ".join(p.name for p in removed)
        notice(f"{face.name}: removed {len(removed)} task root(s) left by killed runs: {names}")


def nix_overlay(req: TaskRequest, rootfs: Path) -> NixOverlay:
    """The host /nix overlay's dirs under ``<state>/nix-overlay`` (upper and work persist across
    tasks). Two overlays on one upper corrupt it (the kernel only warns), so the helper holds
    ``lease`` for as long as the VM runs; here it is only probed, to stop a second task before
    anything is made for it (a race past the probe still stops at the helper's own lock)."""
    lower = rootfs / "nix"
    if not lower.is_dir() or lower.is_symlink():
        raise AgentboxError(
            f"image {req.image} has no /nix directory to put under the /nix overlay",
            hint="use an image built by 'agentbox image build' (it carries /nix)",
        )
    from agentbox_krun.nsmount import overlay_options

    base = req.state_dir / "nix-overlay"
    overlay = NixOverlay(os.fspath(lower), os.fspath(base / "upper"), os.fspath(base / "work"),
                         os.fspath(base / "lease"))  # fmt: skip
    overlay_options(overlay)  # paths overlayfs cannot take are refused before anything is made
    probe = FileLock(base / "lease", what=f"the /nix overlay {base}")
    probe.acquire()
    probe.release()
    for d in ("upper", "work"):
        (base / d).mkdir(parents=True, exist_ok=True)
    return overlay


def _guest_init(face: Face, req: TaskRequest, root: taskroot.TaskRoot) -> str:
    found = check_guest_init(req.image, root.rootfs, face.guest_init)
    if req.guest_init_override is not None:
        shutil.copy2(req.guest_init_override, found)  # replaces the file in the task root only
    return "/" + os.path.relpath(found, root.rootfs)


def run_task_here(
    face: Face,
    req: TaskRequest,
    runner: Runner,
    profiler: Profiler,
    *,
    program: str,
    helper_verb: str,
    environ: dict[str, str],
    notice: Callable[[str], None],
) -> int:
    """``run_task`` wired for a command line: images are ingested by ``loftd.ingest`` in one
    Buildah transaction (inside ``buildah unshare`` when rootless), and the helper is
    ``program internal helper_verb`` again."""
    from agentbox_podman import buildah
    from loftd.ingest import ingest_argv

    prefix = buildah.unshare(debug=req.debug) if req.uid != 0 else []
    ingest = ingest_argv(prefix, sys.executable, req.images_dir, face.guest_init, req.pull,
                         debug=req.debug)  # fmt: skip

    def local_digest(ref: str) -> str | None:
        return buildah.local_image_digest(runner, ref, debug=req.debug)

    return run_task(face, req, runner, profiler, ingest_argv=ingest, local_digest=local_digest,
                    helper_argv=helper_argv(program, helper_verb), environ=environ,
                    notice=notice)  # fmt: skip


def helper_argv(program: str, verb: str) -> list[str]:
    """How the parent starts the helper: this program again, ``internal <verb> -- CONF``."""
    return [sys.executable, "-m", program, "internal", verb, "--"]
