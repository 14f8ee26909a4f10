"""The libkrun helper process: ``python -m agentbox_krun.helper ENV_VAR LAUNCH_CONF``.

``krun_start_enter`` never returns when the VM starts (libkrun exits the process with the
guest's status), so it is only ever called here, in a child the command line starts with the
terminal inherited. ``ENV_VAR`` names the variable that may point at the library (each
app has its own; the parent sets it to the library it found). ``python -m agentbox_krun.enter``
is how the runtime starts it.

Exit codes when libkrun does not take over: 125 a setup call failed, 126 krun_start_enter
failed, 127 libkrun could not be loaded, 2 bad arguments or launch.conf. A guest command can
exit with those numbers too, so the helper also writes how far it got to ``helper.status`` next
to launch.conf: ``started`` only once krun_start_enter is called; the parent reads it
(``outcome``) to tell the guest's status from the helper's failure, and in which phase.
"""

from __future__ import annotations

import os
import sys

from agentbox_krun import launchconf
from agentbox_krun.errors import KrunError, KrunLoadError, LaunchConfError
from agentbox_krun.ffi import Krun, load
from agentbox_krun.launchconf import LaunchConf

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

EXIT_SETUP, EXIT_START, EXIT_LOAD, EXIT_USAGE = 125, 126, 127, 2
STATUS_NAME = "helper.status"
# phase written before it begins -> what the parent says when the helper ends there
PHASES = {
    "missing": "starting: it left no helper.status (it never ran, or could not write it)",
    "read": "reading launch.conf",
    "load": "loading libkrun",
    "lock": "taking its task's lock",
    "lease": "taking the /nix overlay's lease: another task of this project is using it",
    "mount": "mounting /nix and the workspace into the root",
    "setup": "configuring libkrun",
    "start-failed": "starting the VM (krun_start_enter returned)",
}
STARTED = "started"


def _mark(conf_path: str, phase: str) -> bool:
    """Record ``phase`` atomically (a reader sees the old or the new one, never a torn file)."""
    status = _status_path(conf_path)
    tmp = os.path.join(os.path.dirname(status), f".{STATUS_NAME}.tmp")
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(phase + "\n")
        os.replace(tmp, status)
    except OSError:
        return False
    return True


def _status_path(conf_path: str) -> str:
    """``helper.status``, next to launch.conf."""
    return os.path.join(os.path.dirname(conf_path), STATUS_NAME)


def outcome(task_dir: Path) -> str | None:
    """None when libkrun took over (the exit status is the guest's), else the phase the helper
    stopped in (a key of ``PHASES``, or what it wrote)."""
    try:
        phase = (task_dir / STATUS_NAME).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return "missing"
    return None if phase == STARTED else phase


def describe(phase: str) -> str:
    return PHASES.get(phase, f"in an unknown phase {phase!r}")


LOG_TO_STDERR, LOG_OFF, LOG_STYLE_NEVER, LOG_OPTION_NO_ENV = 2, 0, 2, 1


class RootMountError(KrunError):
    """A graft into the root failed (before libkrun was configured)."""


_held: list[object] = []  # the /nix lease, held for as long as this process (the VM) lives


def hold(path: str, what: str, *, shared: bool = False, create: bool = True) -> None:
    """Hold a lock until this process (the VM) ends: the /nix overlay's lease (one overlay per
    upper), or the task's lock (shared with the command line: a task whose holders are all gone
    is abandoned, and the next run removes it)."""
    from agentbox_state.errors import AgentboxError, LockHeldError
    from agentbox_state.lock import FileLock, LockGoneError

    lock = FileLock(path, what=what)
    try:
        lock.acquire(shared=shared, create=create)
    except AgentboxError as err:
        refused = RootMountError.invalid(err.message)
        refused.hint = err.hint
        if not create and isinstance(err, (LockGoneError, LockHeldError)):
            # the command line is gone and a later run is removing (or removed) this task
            refused = RootMountError.invalid(
                f"{what} is being removed by a later run (the run that made it is gone)"
            )
        raise refused from err
    _held.append(lock)


def prepare_root(conf: LaunchConf) -> None:
    """loftd's grafts, in a mount namespace of this process only: the /nix overlay on the task
    root's /nix (its lease already held), then each bind mount (the workspace)."""
    from agentbox_krun import nsmount

    try:
        nsmount.private_namespace()
        if conf.nix_overlay is not None:
            nsmount.mount_nix(conf.nix_overlay, conf.task_rootfs)
        for mount in conf.mounts:
            nsmount.bind(mount, conf.task_rootfs)
    except KrunError as err:
        raise RootMountError.wrap(err) from err


def configure(krun: Krun, conf: LaunchConf) -> int:
    """Every setup call in the original's order; the context is freed if one fails."""
    if conf.init_log and krun.has("krun_init_log"):
        krun.init_log(LOG_TO_STDERR, LOG_OFF, LOG_STYLE_NEVER, LOG_OPTION_NO_ENV)
    else:
        krun.set_log_level(LOG_OFF)
    ctx = krun.create_ctx()
    try:
        krun.set_vm_config(ctx, conf.vcpus, conf.ram_mib)
        if conf.nested_virt and krun.has("krun_check_nested_virt") and krun.check_nested_virt():
            krun.set_nested_virt(ctx, True)
        krun.set_root(ctx, conf.task_rootfs)
        for disk in conf.disks:
            krun.add_disk(ctx, disk.block_id, disk.path, disk.readonly)
        if krun.has("krun_disable_implicit_console") and \
                krun.has("krun_add_virtio_console_default"):  # fmt: skip
            krun.disable_implicit_console(ctx)
            krun.add_virtio_console_default(ctx, 0, 1, 2)
        # else: builds without them (the PyPI fork) keep libkrun's implicit console on stdio
        if conf.workspace_tag and conf.workspace_source:
            krun.add_virtiofs(ctx, conf.workspace_tag, conf.workspace_source)
        for share in conf.shares:  # read-only ones refused where libkrun cannot enforce it
            krun.add_virtiofs(ctx, share.tag, share.source, share.readonly)
        krun.set_workdir(ctx, conf.workdir)
        krun.set_exec(ctx, conf.exec_path, conf.argv, conf.env)
    except BaseException:
        import contextlib  # only on this path: the helper's start-up imports little

        with contextlib.suppress(KrunError):
            krun.free_ctx(ctx)
        raise
    return ctx


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m agentbox_krun.helper ENV_VAR LAUNCH_CONF", file=sys.stderr)
        return EXIT_USAGE
    env_var, conf_path = args
    try:
        _mark(conf_path, "read")
        conf = launchconf.read(conf_path)
        _mark(conf_path, "load")
        krun = load(os.environ, env_var)
        if conf.task_lock is not None:
            _mark(conf_path, "lock")
            hold(conf.task_lock, f"task {os.path.basename(os.path.dirname(conf.task_lock))}",
                 shared=True, create=False)  # fmt: skip
        if conf.nix_overlay is not None:
            _mark(conf_path, "lease")
            lease = conf.nix_overlay.lease
            hold(lease, f"the /nix overlay {os.path.dirname(lease)}")
        if conf.nix_overlay is not None or conf.mounts:
            _mark(conf_path, "mount")
            prepare_root(conf)
        _mark(conf_path, "setup")
        ctx = configure(krun, conf)
    except LaunchConfError as err:
        print(f"libkrun helper: {err.message}", file=sys.stderr)
        return EXIT_USAGE
    except KrunLoadError as err:
        print(f"libkrun helper: {err.message}\nhint: {err.hint}", file=sys.stderr)
        return EXIT_LOAD
    except RootMountError as err:
        hint = f"\nhint: {err.hint}" if err.hint else ""
        print(f"libkrun helper: preparing the root failed: {err.message}{hint}", file=sys.stderr)
        return EXIT_SETUP
    except KrunError as err:
        print(f"libkrun helper: libkrun setup failed: {err.message}", file=sys.stderr)
        return EXIT_SETUP
    if not _mark(conf_path, STARTED):  # else the parent could not tell the guest's from ours
        print(f"libkrun helper: cannot write {_status_path(conf_path)}; not "
              "starting the VM", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP
    try:
        krun.start_enter(ctx)
    except KrunError as err:
        print(f"libkrun helper: libkrun start failed: {err.message}", file=sys.stderr)
    _mark(conf_path, "start-failed")
    return EXIT_START


if __name__ == "__main__":
    sys.exit(main())
