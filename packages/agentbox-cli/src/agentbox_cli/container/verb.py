"""``agentbox container [sidecar] [-- CMD...]``."""

from __future__ import annotations

import os

from agentbox_state.cli.app import Context, Verb
from agentbox_state.errors import AgentboxError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from agentbox_cli.container.plan import SidecarPlan
    from agentbox_cli.container.sidecar import ImageFacts, Prepared
    from agentbox_state.lock import FileLock
    from agentbox_state.runner import Runner


def grace_seconds(ctx: Context) -> int:
    """``[container] sidecar_idle_grace`` (the config layer applies
    AGENTBOX_SIDECAR_IDLE_GRACE and reports a bad value)."""
    from agentbox_cli.container.plan import DEFAULT_GRACE

    configured = ctx.config.get("container.sidecar_idle_grace")
    return configured if isinstance(configured, int) else DEFAULT_GRACE


def run(ctx: Context) -> int:
    from pathlib import Path

    from agentbox_cli.container import sidecar
    from agentbox_cli.container.plan import ContainerRequest, HostFacts, plan_container
    from agentbox_cli.imageref import resolve_image
    from agentbox_state.workspace import current_workspace

    workspace = current_workspace()
    state_dir = ctx.paths.layout(workspace).state_dir
    runner = ctx.runner()
    known = sidecar.read_state(state_dir / "nix-sidecar.state").get("image")
    with ctx.profiler.phase("image_reference_resolution"):
        image = resolve_image(ctx.flags, runner, known=known)
    host = HostFacts(
        uid=os.getuid(), gid=os.getgid(), home=Path(ctx.environ.get("HOME", "/")),
        cwd=Path(workspace.path), stdin_tty=os.isatty(0), stdout_tty=os.isatty(1),
    )  # fmt: skip
    request = ContainerRequest(
        image=image, workspace_key=workspace.key, slug=workspace.slug,
        hostname=workspace.hostname, task_name=workspace.task_name(), state_dir=state_dir,
        sccache=ctx.paths.sccache, command=ctx.args.command, root=ctx.flags.root,
        debug=ctx.flags.debug, grace=grace_seconds(ctx), profile=ctx.flags.profile,
    )  # fmt: skip
    plan = plan_container(request, host)
    if ctx.flags.dry_run:
        ctx.out("\n".join(plan.describe()))
        return 0
    setup, users = sidecar.setup_lock(state_dir), sidecar.users_lock(state_dir)
    starter: Starter | None = None
    with ctx.profiler.phase("sidecar"):
        setup.acquire(wait=120, on_wait=lambda m: ctx.err(f"agentbox: {m}"))
        try:
            prepared = sidecar.ensure(plan.sidecar, runner, say=lambda m: ctx.err(f"agentbox: {m}"))

            def check_storage() -> str | None:  # on the cold path: a one-time warning
                from agentbox_cli.container.storage_check import vfs_warning

                return vfs_warning(runner, ctx.paths.base / "vfs-warned",
                                   debug=ctx.flags.debug)  # fmt: skip

            if ctx.args.action == "sidecar":
                warning = check_storage() if prepared.facts is not None else None
                if warning:
                    ctx.err(warning)
                return _sidecar_action(ctx, plan.sidecar, prepared, runner)
            for d in plan.host_dirs:
                d.mkdir(parents=True, exist_ok=True)
            users.acquire(shared=True)
            if prepared.facts is not None:  # started alongside the task; it releases setup
                starter = Starter(plan.sidecar, runner, prepared.facts, setup, check_storage)
        finally:
            if starter is None:
                setup.release()
    try:
        with ctx.profiler.phase("task"):
            task = plan.task_for(daemon_starting=starter is not None)
            status = runner.interactive(task.argv())
        if starter is not None:
            failed = starter.join()
            if starter.warning:
                ctx.err(starter.warning)
            if failed is not None:
                ctx.err(f"agentbox: {failed.message}")
                if failed.hint:
                    ctx.err(f"hint: {failed.hint}")
                return status or 1
        return status
    finally:
        if starter is not None:
            starter.join()
        users.release()
        outcome = None
        if plan.grace == 0:
            outcome = sidecar.remove_if_idle(plan.sidecar, state_dir, runner)
        if outcome not in (sidecar.REMOVED, sidecar.IN_USE):
            sidecar.schedule_removal(state_dir, plan.sidecar, plan.grace, runner)


class Starter:
    """Starts the sidecar container in a thread while the task starts (the overlay is already
    mounted, so the task's bind mount of it is right); releases ``setup_lock`` when done. The
    one-time storage check runs in a second thread, also off the task's start."""

    def __init__(self, plan: SidecarPlan, runner: Runner, facts: ImageFacts, setup: FileLock,
                 check: Callable[[], str | None]) -> None:  # fmt: skip
        import threading

        self.error: AgentboxError | None = None
        self.warning: str | None = None
        self._joined = False
        self._threads = [
            threading.Thread(target=self._start, args=(plan, runner, facts, setup),
                             name="nix-sidecar-start", daemon=True),
            threading.Thread(target=self._check, args=(check,), name="storage-check",
                             daemon=True),
        ]  # fmt: skip
        for thread in self._threads:
            thread.start()

    def _start(self, plan: SidecarPlan, runner: Runner, facts: ImageFacts,
               setup: FileLock) -> None:  # fmt: skip
        from agentbox_cli.container import sidecar

        try:
            sidecar.start(plan, runner, facts)
        except AgentboxError as err:
            self.error = err
        finally:
            setup.release()

    def _check(self, check: Callable[[], str | None]) -> None:
        try:
            self.warning = check()
        except AgentboxError:
            self.warning = None  # only a hint: never fails the run

    def join(self) -> AgentboxError | None:
        """The start's error, once (None after the first call)."""
        for thread in self._threads:
            thread.join()
        if self._joined:
            return None
        self._joined = True
        return self.error


def _sidecar_action(ctx: Context, plan: SidecarPlan, prepared: Prepared, runner: Runner) -> int:
    """``agentbox container sidecar``: start it (or reuse it) without waiting for its daemon,
    so a broken one can be inspected; prints its name and its socket's host path."""
    from agentbox_cli.container import sidecar

    if prepared.facts is not None:
        sidecar.start(plan, runner, prepared.facts)
    ctx.out(plan.name)
    ctx.out(os.fspath(plan.socket))
    where = ("inside `podman unshare` (the overlay is mounted in rootless Podman's "
             "namespace): `podman unshare ls -l " + os.fspath(plan.socket) + "`"
             if plan.userns else "")  # fmt: skip
    ctx.err(f"agentbox: sidecar {plan.name} {prepared.status}; not waited for: its daemon "
            f"socket is {plan.socket}" + (f", {where}" if where else "")
            + f"; `podman logs {plan.name}` shows the daemon's output. It keeps running until "
            "the next task's idle grace ends")  # fmt: skip
    return 0


CONTAINER = Verb(
    "container",
    "a shell (or -- CMD) in a rootless Podman container with a shared Nix daemon sidecar",
    run,
    actions=("sidecar",),
    action_required=False,
    runs_command=True,
)
