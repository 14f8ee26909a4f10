"""``loftd [--rootfs-backend B] [--preserve-debug] [--mem GIB] [-- CMD...]``: a task in a
direct-libkrun microVM, on the runtime `agentbox microvm` shares, with loftd's contract."""

from __future__ import annotations

import os

from agentbox_state.cli.app import Context, Verb
from agentbox_state.cli.args import Option
from agentbox_state.errors import UsageError
from loftd.options import MEM, PRESERVE_DEBUG
from loftd.schema import BACKENDS, LOCAL_IMAGE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

OPTIONS = (
    Option(
        "--rootfs-backend",
        "btrfs-snapshot or fuse-overlay (overrides [task-rootfs].backend)",
        metavar="BACKEND",
        choices=BACKENDS,
    ),
    PRESERVE_DEBUG,
    MEM,
)


def run(ctx: Context) -> int:
    from pathlib import Path

    from agentbox_krun.sizing import parse_mem, vcpus
    from agentbox_storage.backends import Backend, parse_backend
    from loftd.face import FACE
    from loftd.facts import probe_host
    from loftd.plan import plan_task
    from loftd.runtime import TaskRequest
    from loftd.schema import BACKENDS, PUBLISHED_IMAGE

    workspace = ctx.mounted_workspace()  # refused before anything is asked of the host
    flag = ctx.args.value("rootfs_backend")
    configured = ctx.config.get("task-rootfs.backend")
    allowed = tuple(Backend(b) for b in BACKENDS)
    backend = parse_backend(flag or (configured if isinstance(configured, str) else BACKENDS[0]),
                            allowed=allowed)  # fmt: skip
    mem = ctx.args.value("mem")
    mem_gib = parse_mem(mem) if mem is not None else 4
    runner = ctx.runner()
    explicit = ctx.flags.image.value if isinstance(ctx.flags.image.value, str) else None

    def local_exists() -> bool:
        """Buildah's answer, or the one remembered while its image index is unchanged (the
        probe that follows keeps it)."""
        from loftd.facts import DIGESTS_FILE, remembered_digest

        digest, _ = remembered_digest(runner, LOCAL_IMAGE, debug=ctx.flags.debug,
                                      environ=ctx.environ,
                                      store=ctx.paths.images / DIGESTS_FILE)  # fmt: skip
        return digest is not None

    image, pull = choose_image(explicit, ctx.flags.pull_latest, local_exists, PUBLISHED_IMAGE)
    request = TaskRequest(
        image=image, backend=backend, workspace=Path(workspace.path),
        state_dir=ctx.paths.layout(workspace).state_dir, images_dir=ctx.paths.images,
        task_id=workspace.task_name(), command=ctx.args.command, uid=os.getuid(),
        gid=os.getgid(), ram_mib=mem_gib * 1024, vcpus=vcpus(os.cpu_count() or 1),
        root=ctx.flags.root, preserve=ctx.args.flag("preserve_debug"), pull=pull,
        profile=ctx.flags.profile, debug=ctx.flags.debug,
    )  # fmt: skip
    host = probe_host(FACE, request, runner, ctx.profiler, environ=ctx.environ)
    plan = plan_task(FACE, request, host)
    if ctx.flags.dry_run:
        ctx.out("\n".join(plan.describe()))
        return 0
    from loftd.execute import execute

    return execute(plan, runner, ctx.profiler, ctx.err)


def choose_image(
    explicit: str | None, pull_latest: bool, local_exists: Callable[[], bool], published: str
) -> tuple[str, str]:
    """The image and Buildah's pull policy for it, as the original chose them: ``--image`` with
    ``missing``; ``--pull-latest``: the published image with ``always``; else the local
    ``localhost/loftd:latest`` with ``never`` when it exists, the published one with
    ``missing`` when not."""
    if explicit is not None:
        return explicit, "missing"
    if pull_latest:
        return published, "always"
    if local_exists():
        return LOCAL_IMAGE, "never"
    return published, "missing"


def internal(ctx: Context) -> int:
    """``loftd internal libkrun-enter LAUNCH_CONF``: the helper process (see agentbox_krun)."""
    from agentbox_krun.helper import main as helper

    if ctx.args.action != "libkrun-enter" or len(ctx.args.command) != 1:
        raise UsageError("usage: loftd internal libkrun-enter LAUNCH_CONF")
    return helper(["LOFTD_LIBKRUN_LIBRARY", ctx.args.command[0]])


INTERNAL = Verb(
    "internal", "helpers loftd runs itself (not for direct use)", internal,
    actions=("libkrun-enter",), runs_command=True, operand="CONF", hidden=True,
)  # fmt: skip


LAUNCH = Verb(
    "run", "run a task (the default): a shell, or -- CMD", run, OPTIONS, runs_command=True
)
