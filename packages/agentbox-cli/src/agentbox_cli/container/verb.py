"""``agentbox container [sidecar] [-- CMD...]``."""

from __future__ import annotations

import os

from agentbox_state.cli.app import Context, Verb
from agentbox_state.errors import UsageError

GRACE_ENV = "AGENTBOX_SIDECAR_IDLE_GRACE"


def grace_seconds(ctx: Context) -> int:
    from agentbox_cli.container.plan import DEFAULT_GRACE

    if GRACE_ENV in ctx.environ:
        raw = ctx.environ[GRACE_ENV]
        if not raw.isdigit():
            raise UsageError(f"{GRACE_ENV}={raw!r} is not a whole number of seconds",
                             hint="set it to 0 or more, or unset it")  # fmt: skip
        return int(raw)
    configured = ctx.config.get("container.sidecar_idle_grace")
    return configured if isinstance(configured, int) else DEFAULT_GRACE


def run(ctx: Context) -> int:
    from pathlib import Path

    from agentbox_cli.container import sidecar
    from agentbox_cli.container.plan import ContainerRequest, HostFacts, plan_container
    from agentbox_cli.imageref import resolve_image
    from agentbox_state.workspace import current_workspace

    workspace = current_workspace()
    state_dir = Path(ctx.paths.workspace_dir(workspace))
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
        sccache=Path(ctx.paths.sccache), command=ctx.args.command, root=ctx.flags.root,
        debug=ctx.flags.debug, grace=grace_seconds(ctx), profile=ctx.flags.profile,
    )  # fmt: skip
    plan = plan_container(request, host)
    if ctx.flags.dry_run:
        ctx.out("\n".join(plan.describe()))
        return 0
    for d in plan.host_dirs:
        d.mkdir(parents=True, exist_ok=True)
    setup, users = sidecar.setup_lock(state_dir), sidecar.users_lock(state_dir)
    with ctx.profiler.phase("sidecar"):
        setup.acquire(wait=120, on_wait=lambda m: ctx.err(f"agentbox: {m}"))
        try:
            status = sidecar.ensure(plan.sidecar, runner)
            if status == "started":  # the cold path: a good moment for a one-time check
                from agentbox_cli.container.storage_check import vfs_warning

                warning = vfs_warning(runner, Path(ctx.paths.base) / "vfs-warned",
                                      debug=ctx.flags.debug)  # fmt: skip
                if warning:
                    ctx.err(warning)
            if ctx.args.action == "sidecar":
                ctx.out(plan.sidecar.name)
                ctx.err(f"agentbox: sidecar {plan.sidecar.name} {status}; it keeps running "
                        "until the next task's idle grace ends")  # fmt: skip
                return 0
            users.acquire(shared=True)
        finally:
            setup.release()
    try:
        with ctx.profiler.phase("task"):
            return runner.interactive(plan.task.argv())
    finally:
        users.release()
        outcome = None
        if plan.grace == 0:
            outcome = sidecar.remove_if_idle(plan.sidecar, state_dir, runner)
        if outcome not in (sidecar.REMOVED, sidecar.IN_USE):
            sidecar.schedule_removal(state_dir, plan.sidecar, plan.grace, runner)


CONTAINER = Verb(
    "container",
    "a shell (or -- CMD) in a rootless Podman container with a shared Nix daemon sidecar",
    run,
    actions=("sidecar",),
    action_required=False,
    runs_command=True,
)


def internal(ctx: Context) -> int:
    """Helpers agentbox starts itself: ``internal sidecar-reap STATE_DIR IMAGE GRACE`` and
    ``internal krun-enter LAUNCH_CONF`` (the libkrun helper process); ``--`` before the
    operands is allowed."""
    from pathlib import Path

    if ctx.args.action == "krun-enter":
        from agentbox_krun.helper import main as helper

        if len(ctx.args.command) != 1:
            raise UsageError("usage: agentbox internal krun-enter LAUNCH_CONF")
        return helper(["AGENTBOX_LIBKRUN_LIBRARY", ctx.args.command[0]])

    from agentbox_cli.container import sidecar
    from agentbox_cli.container.plan import plan_sidecar

    words = ctx.args.command
    if ctx.args.action != "sidecar-reap" or len(words) != 3 or not words[2].isdigit():
        raise UsageError("usage: agentbox internal sidecar-reap STATE_DIR IMAGE GRACE")
    state_dir, image, grace = Path(words[0]), words[1], int(words[2])
    plan = plan_sidecar(image, state_dir.name, state_dir, rootless=os.getuid() != 0,
                        debug=ctx.flags.debug)  # fmt: skip
    return sidecar.reap(plan, state_dir, grace, ctx.runner())


INTERNAL = Verb(
    "internal", "helpers agentbox runs itself (not for direct use)", internal,
    actions=("sidecar-reap", "krun-enter"), runs_command=True, operands=True,
)  # fmt: skip
