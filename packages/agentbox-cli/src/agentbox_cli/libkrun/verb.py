"""``agentbox [libkrun] [-- CMD]``, ``libkrun resize``, ``libkrun reset-nix``."""

from __future__ import annotations

import os

from agentbox_state.cli.app import Context, Verb
from agentbox_state.cli.args import Option
from agentbox_state.errors import UsageError

OPTIONS = (
    Option("--tsi", "TSI networking instead of passt (no --publish then)"),
    Option("--mem", "VM memory in whole GiB (default: 80% of the host's)", metavar="GIB"),
    Option(
        "--publish",
        "publish a port, passed to podman --publish (repeatable)",
        metavar="SPEC",
        short="-p",
        repeat=True,
    ),
    Option("--guest-init", "bind a host-built guest init over the image's", metavar="PATH"),
    Option("--target", "resize: the disk to grow, nix or containers", metavar="DISK"),
    Option("--size", "resize: the new size, like 128 (GiB), 128G or 2TiB", metavar="SIZE"),
    Option("--force", "reset-nix: really delete the /nix disk"),
)
RUN_ONLY = ("tsi", "mem", "publish", "guest_init")
RESIZE_ONLY = ("target", "size")


def _refuse_misplaced(ctx: Context) -> None:
    action = ctx.args.action
    given = set(ctx.args.values)
    wrong = {
        None: given & {*RESIZE_ONLY, "force"},
        "resize": given & {*RUN_ONLY, "force"},
        "reset-nix": given & {*RUN_ONLY, *RESIZE_ONLY},
    }[action]
    if wrong:
        flags = ", ".join(sorted("--" + w.replace("_", "-") for w in wrong))
        where = f"libkrun {action}" if action else "a libkrun run"
        raise UsageError(f"{flags} does not apply to {where}", hint="see 'agentbox libkrun --help'")


def run(ctx: Context) -> int:
    _refuse_misplaced(ctx)
    if ctx.args.action == "reset-nix":
        from agentbox_cli.libkrun.maintenance import reset_nix

        return reset_nix(ctx)
    if ctx.args.action == "resize":
        from agentbox_cli.libkrun.maintenance import resize

        return resize(ctx)
    return launch(ctx)


def launch(ctx: Context) -> int:
    from pathlib import Path

    from agentbox_cli.imageref import resolve_image
    from agentbox_cli.libkrun.handler import check_krun_handler
    from agentbox_cli.libkrun.plan import KrunHost, LibkrunRequest, parse_mem, plan_libkrun
    from agentbox_state.workspace import current_workspace
    from agentbox_storage.disks import open_disk

    workspace = current_workspace()
    state_dir = Path(ctx.paths.workspace_dir(workspace))
    mem = ctx.args.value("mem")
    guest_init = ctx.args.value("guest_init")
    publish = ctx.args.values.get("publish", ())
    runner = ctx.runner()
    request = LibkrunRequest(
        image=resolve_image(ctx.flags, runner),
        workspace_key=workspace.key, hostname=workspace.hostname,
        task_name=workspace.task_name(), state_dir=state_dir, sccache=Path(ctx.paths.sccache),
        command=ctx.args.command, mem_gib=parse_mem(mem) if mem is not None else None,
        tsi=ctx.args.flag("tsi"), publish=publish if isinstance(publish, tuple) else (),
        guest_init=Path(guest_init).absolute() if guest_init else None, root=ctx.flags.root,
        debug=ctx.flags.debug, profile=ctx.flags.profile,
    )  # fmt: skip
    host = KrunHost(
        uid=os.getuid(), gid=os.getgid(), home=Path(ctx.environ.get("HOME", "/")),
        cwd=Path(workspace.path), mem_total_kib=_mem_total_kib(), cpus=os.cpu_count() or 1,
        stdin_tty=os.isatty(0), stdout_tty=os.isatty(1),
    )  # fmt: skip
    plan = plan_libkrun(request, host)
    if ctx.flags.dry_run:
        ctx.out("\n".join(plan.describe()))
        return 0
    if request.guest_init is not None and not request.guest_init.is_file():
        raise UsageError(f"--guest-init {request.guest_init} is not a file")
    with ctx.profiler.phase("krun_handler_check"):
        check_krun_handler(runner)  # before anything is created
    for d in plan.host_dirs:
        d.mkdir(parents=True, exist_ok=True)
    (nix_spec, nix_path), (ctr_spec, ctr_path) = plan.disks
    with (
        ctx.profiler.phase("disks"),
        open_disk(nix_path, nix_spec, runner),
        open_disk(ctr_path, ctr_spec, runner),
        ctx.profiler.phase("task"),
    ):
        return runner.interactive(plan.run.argv())


def _mem_total_kib() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    raise UsageError("cannot read MemTotal from /proc/meminfo", hint="give --mem GIB")


LIBKRUN = Verb(
    "libkrun",
    "a shell (or -- CMD) in a libkrun microVM through Podman (the default mode)",
    run,
    OPTIONS,
    actions=("resize", "reset-nix"),
    action_required=False,
    runs_command=True,
)
