"""``agentbox microvm [--storage B] [--preserve-debug] [--mem GIB] [-- CMD]``: the request, then
the direct-libkrun runtime's facts → plan → execute (``loftd.runtime``)."""

from __future__ import annotations

import os

from agentbox_state.cli.app import Context, Verb
from agentbox_state.cli.args import Option
from agentbox_state.errors import UsageError
from loftd.options import MEM, PRESERVE_DEBUG

# the task root backends --storage accepts (agentbox_storage.backends.Backend values; that
# module, and its enum, is imported only when the verb runs): validation and completion
STORAGE_BACKENDS = ("auto", "btrfs-snapshot", "fuse-overlay", "reflink")
OPTIONS = (
    Option(
        "--storage",
        "task root: auto, btrfs-snapshot, fuse-overlay or reflink (default auto)",
        metavar="BACKEND",
        choices=STORAGE_BACKENDS,
    ),
    PRESERVE_DEBUG,
    MEM,
    Option("--guest-init", "copy a host-built guest init over the image's", metavar="PATH"),
)


def run(ctx: Context) -> int:
    from pathlib import Path

    from agentbox_cli.microvm.face import FACE
    from agentbox_krun.sizing import parse_mem, vcpus
    from agentbox_podman.images import LOCAL_IMAGE
    from agentbox_storage.backends import Backend, parse_backend
    from loftd.facts import probe_host
    from loftd.plan import plan_task
    from loftd.runtime import Share, TaskRequest

    if ctx.flags.pull_latest:
        raise UsageError(
            "agentbox --pull-latest microvm is not supported: microvm reads images through "
            "Buildah's local storage, not Podman pulls",
            hint="build the image locally (agentbox image build) or pass --image",
        )
    backend = parse_backend(ctx.args.value("storage") or "auto",
                            allowed=tuple(map(Backend, STORAGE_BACKENDS)))  # fmt: skip
    mem = ctx.args.value("mem")
    guest_init = ctx.args.value("guest_init")
    if guest_init is not None and not Path(guest_init).is_file():
        raise UsageError(f"--guest-init {guest_init} is not a file")
    from agentbox_cli.egress.policy import refuse_unenforced

    refuse_unenforced(ctx.config, verb="microvm")
    workspace = ctx.mounted_workspace()
    runner = ctx.runner()
    shares: tuple[Share, ...] = ()
    if ctx.flags.agent is not None:
        from agentbox_cli.agents.enter import enter

        workspace, git = enter(ctx, workspace, runner)
        shares = tuple(Share(m.source, m.target, m.readonly) for m in git)
    image = ctx.flags.image.value if isinstance(ctx.flags.image.value, str) else LOCAL_IMAGE
    request = TaskRequest(
        image=image, backend=backend, workspace=Path(workspace.path),
        state_dir=ctx.paths.layout(workspace).state_dir, images_dir=ctx.paths.images,
        task_id=workspace.task_name(), command=ctx.args.command, uid=os.getuid(),
        gid=os.getgid(), ram_mib=(parse_mem(mem) if mem else 4) * 1024,
        vcpus=vcpus(os.cpu_count() or 1), root=ctx.flags.root,
        preserve=ctx.args.flag("preserve_debug"),
        guest_init_override=Path(guest_init).absolute() if guest_init else None,
        shares=shares, profile=ctx.flags.profile, debug=ctx.flags.debug,
    )  # fmt: skip
    host = probe_host(FACE, request, runner, ctx.profiler, environ=ctx.environ)
    plan = plan_task(FACE, request, host)
    if ctx.flags.dry_run:
        ctx.out("\n".join(plan.describe()))
        return 0
    from loftd.execute import execute

    return execute(plan, runner, ctx.profiler, ctx.err)


MICROVM = Verb(
    "microvm",
    "a shell (or -- CMD) in a microVM started by agentbox itself through libkrun",
    run,
    OPTIONS,
    runs_command=True,
    agent=True,
)
