"""What a libkrun run and a resize start from: the host's facts and the request the command
line makes (both read here, so the planners stay pure)."""

from __future__ import annotations

import os
from pathlib import Path

from agentbox_cli.libkrun.plan import KrunHost, LibkrunRequest
from agentbox_krun.sizing import parse_mem
from agentbox_podman.podman import Mount
from agentbox_state.cli.app import Context
from agentbox_state.errors import UsageError
from agentbox_state.workspace import Workspace


def mem_total_kib() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    raise UsageError("cannot read MemTotal from /proc/meminfo", hint="give --mem GIB")


def host_facts(ctx: Context, workspace: Workspace) -> KrunHost:
    return KrunHost(
        uid=os.getuid(), gid=os.getgid(), home=Path(ctx.environ.get("HOME", "/")),
        cwd=Path(workspace.path), mem_total_kib=mem_total_kib(), cpus=os.cpu_count() or 1,
        stdin_tty=os.isatty(0), stdout_tty=os.isatty(1),
    )  # fmt: skip


def request(ctx: Context, workspace: Workspace, image: str, *,
            agent_mounts: tuple[Mount, ...] = ()) -> LibkrunRequest:  # fmt: skip
    """The run the command line asks for (--publish and the command are the run's only;
    ``agent_mounts``: what an agent's worktree needs of the repository's git dir)."""
    mem = ctx.args.value("mem")
    guest_init = ctx.args.value("guest_init")
    publish = ctx.args.values.get("publish", ())
    return LibkrunRequest(
        image=image, workspace_key=workspace.key, hostname=workspace.hostname,
        task_name=workspace.task_name(), state_dir=ctx.paths.layout(workspace).state_dir,
        sccache=ctx.paths.sccache, command=ctx.args.command,
        mem_gib=parse_mem(mem) if mem is not None else None, tsi=ctx.args.flag("tsi"),
        publish=publish if isinstance(publish, tuple) else (),
        guest_init=Path(guest_init).absolute() if guest_init else None, root=ctx.flags.root,
        debug=ctx.flags.debug, profile=ctx.flags.profile, agent_mounts=agent_mounts,
    )  # fmt: skip


def check_guest_init(req: LibkrunRequest) -> None:
    if req.guest_init is not None and not req.guest_init.is_file():
        raise UsageError(f"--guest-init {req.guest_init} is not a file")
