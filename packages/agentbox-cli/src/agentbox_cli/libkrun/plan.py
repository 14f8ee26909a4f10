"""Libkrun mode as a plan (pure): VM size, disks, networking, mounts, env, the podman run."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from agentbox_podman.podman import ROLE_LABEL, WORKSPACE_LABEL, Mount, RunSpec
from agentbox_state.errors import UsageError
from agentbox_storage.disks import LIBKRUN_CONTAINERS, LIBKRUN_NIX, DiskSpec
from loftd.sizing import MAX_MEM_GIB, parse_mem, vcpus

__all__ = ["MAX_MEM_GIB", "parse_mem", "vcpus"]  # the libkrun verb imports them from here

GUEST_INIT_PATH = "/bin/agentbox-guest-init"


@dataclass(frozen=True, slots=True, kw_only=True)
class KrunHost:
    uid: int
    gid: int
    home: Path
    cwd: Path
    mem_total_kib: int
    cpus: int
    stdin_tty: bool
    stdout_tty: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LibkrunRequest:
    image: str
    workspace_key: str
    hostname: str
    task_name: str
    state_dir: Path
    sccache: Path
    command: tuple[str, ...] = ()
    mem_gib: int | None = None
    tsi: bool = False
    publish: tuple[str, ...] = ()
    guest_init: Path | None = None
    root: bool = False
    debug: bool = False
    profile: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LibkrunPlan:
    run: RunSpec
    disks: tuple[tuple[DiskSpec, Path], ...]
    host_dirs: tuple[Path, ...]

    def describe(self) -> list[str]:
        lines = [f"disk {spec.block_id}: {path} (label {spec.label}, sparse 64GiB, leased)"
                 for spec, path in self.disks]  # fmt: skip
        lines += [f"mkdir -p {d}" for d in self.host_dirs]
        lines.append(shlex.join(self.run.argv()))
        return lines


def default_mem_gib(mem_total_kib: int) -> int:
    """80% of the host's memory, floored to whole GiB; an error below 1 GiB."""
    gib = (mem_total_kib * 8 // 10) // (1024 * 1024)
    if gib < 1:
        raise UsageError(
            f"80% of this host's memory ({mem_total_kib} KiB) is less than 1 GiB",
            hint="give the VM memory explicitly with --mem GIB",
        )
    return gib


def plan_libkrun(req: LibkrunRequest, host: KrunHost) -> LibkrunPlan:
    if req.tsi and req.publish:
        raise UsageError("--publish needs passt networking; it cannot be used with --tsi",
                         hint="drop --tsi (passt is the default) or drop --publish")  # fmt: skip
    if any(not p for p in req.publish):
        raise UsageError("--publish is empty", hint="give HOST:GUEST, like 8080:80")
    mem = req.mem_gib if req.mem_gib is not None else default_mem_gib(host.mem_total_kib)
    disks = (
        (LIBKRUN_NIX, req.state_dir / LIBKRUN_NIX.file_name),
        (LIBKRUN_CONTAINERS, req.state_dir / LIBKRUN_CONTAINERS.file_name),
    )
    annotations = [
        ("run.oci.handler", "krun"),
        ("krun.ram_mib", str(mem * 1024)),
        ("krun.cpus", str(vcpus(host.cpus))),
        ("krun.nested_virt", "1"),
    ]
    env = [
        # root on the host is root in the sandbox: dev cannot have uid 0
        *([("AGENTBOX_HOST_UID", str(host.uid)), ("AGENTBOX_HOST_GID", str(host.gid))]
          if host.uid != 0 else [("AGENTBOX_ENTER_AS_ROOT", "1")]),
        ("AGENTBOX_KVM_DROP_TO_DEV", "1"),
        ("AGENTBOX_LIBKRUN_NIX_OVERLAY", "1"), ("AGENTBOX_LIBKRUN_CONTAINERS_STORAGE", "1"),
    ]  # fmt: skip
    for index, (spec, path) in enumerate(disks):
        annotations += [
            (f"krun.disk.{index}.path", os.fspath(path)),
            (f"krun.disk.{index}.id", spec.block_id),
            (f"krun.disk.{index}.readonly", "0"),
        ]
    env += [
        ("AGENTBOX_LIBKRUN_NIX_DISK_ID", LIBKRUN_NIX.block_id),
        ("AGENTBOX_LIBKRUN_NIX_DISK_LABEL", LIBKRUN_NIX.label),
        ("AGENTBOX_LIBKRUN_CONTAINERS_DISK_ID", LIBKRUN_CONTAINERS.block_id),
        ("AGENTBOX_LIBKRUN_CONTAINERS_DISK_LABEL", LIBKRUN_CONTAINERS.label),
        ("SCCACHE_DIR", "/home/dev/.cache/sccache"),
    ]
    if req.tsi:
        annotations.append(("krun.no_proxy", "1"))
    else:
        annotations.append(("krun.use_passt", "1"))
        env.append(("AGENTBOX_LIBKRUN_USE_PASST", "1"))
    if req.root and host.uid != 0:
        env.append(("AGENTBOX_ENTER_AS_ROOT", "1"))
    if req.profile:
        env.append(("AGENTBOX_GUEST_PROFILE", "1"))
    if req.debug:
        env.append(("AGENTBOX_GUEST_DEBUG", "1"))
    cargo = req.state_dir / "cargo"
    mounts = [
        Mount(host.cwd, "/workspace"),
        Mount(host.home / ".codex", "/home/dev/.codex"),
        Mount(host.home / ".pi", "/home/dev/.pi"),
        Mount(cargo, "/home/dev/.cargo"),
        Mount(req.sccache, "/home/dev/.cache/sccache"),
    ]
    if req.guest_init is not None:
        mounts.append(Mount(req.guest_init, GUEST_INIT_PATH, readonly=True))
    run = RunSpec(
        image=req.image,
        name=req.task_name,
        command=req.command,
        interactive=not req.command or not host.stdin_tty,
        tty=host.stdin_tty and host.stdout_tty,
        runtime="crun",
        userns="keep-id",
        user="0:0",
        hostname=req.hostname,
        workdir="/workspace",
        labels=((ROLE_LABEL, "libkrun-task"), (WORKSPACE_LABEL, req.workspace_key)),
        annotations=tuple(annotations),
        env=tuple(env),
        mounts=tuple(mounts),
        tmpfs=("/tmp:rw,exec,mode=1777",),
        devices=("/dev/net/tun",),
        publish=req.publish,
        global_options=("--log-level=debug",) if req.debug else (),
    )
    host_dirs = (host.home / ".codex", host.home / ".pi", cargo, req.sccache)
    return LibkrunPlan(run=run, disks=disks, host_dirs=host_dirs)
