"""Libkrun mode as a plan (pure): VM size, disks, networking, mounts, env, the podman run."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from agentbox_cli.libkrun.disks import LIBKRUN_CONTAINERS, LIBKRUN_NIX
from agentbox_krun.sizing import vcpus
from agentbox_podman.podman import ROLE_LABEL, WORKSPACE_LABEL, Mount, RunSpec
from agentbox_state.errors import UsageError
from agentbox_storage.disks import DiskSpec

GUEST_INIT_PATH = "/bin/agentbox-guest-init"
KRUN_MAX_CPUS = 16  # crun's krun.cpus maximum (zeroqn/crun krun.1.md, OCI Annotations)


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
    # --agent: the repository's git dir at its host path, and what a commit writes there
    agent_mounts: tuple[Mount, ...] = ()


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


TMP = "/tmp:rw,exec,mode=1777"
TUN = "/dev/net/tun"
# `libkrun resize --target T`: the disk and the name of its variables in the guest's contract.
TARGETS = {"nix": LIBKRUN_NIX, "containers": LIBKRUN_CONTAINERS}

Pairs = list[tuple[str, str]]


def _userns(host: KrunHost) -> str | None:
    """keep-id maps the user to themselves; rootful Podman refuses it (and root needs none)."""
    return "keep-id" if host.uid != 0 else None


def _vm(req: LibkrunRequest, host: KrunHost) -> Pairs:
    mem = req.mem_gib if req.mem_gib is not None else default_mem_gib(host.mem_total_kib)
    return [
        ("run.oci.handler", "krun"),
        ("krun.ram_mib", str(mem * 1024)),
        ("krun.cpus", str(min(vcpus(host.cpus), KRUN_MAX_CPUS))),
    ]


def _disk(index: int, spec: DiskSpec, path: Path) -> Pairs:
    """crun's krun.disk.N.* (krun.1.md, DISK CONFIGURATION): readonly is `true` or `false`."""
    return [
        (f"krun.disk.{index}.path", os.fspath(path)),
        (f"krun.disk.{index}.id", spec.block_id),
        (f"krun.disk.{index}.readonly", "false"),
    ]


def _disk_env(target: str) -> Pairs:
    spec, var = TARGETS[target], f"AGENTBOX_LIBKRUN_{target.upper()}_DISK"
    return [(f"{var}_ID", spec.block_id), (f"{var}_LABEL", spec.label)]


def _network(req: LibkrunRequest) -> tuple[Pairs, Pairs]:
    """(annotations, env): passt is crun's krun.use_passt; TSI (libkrun's default when passt is
    off) gets `no_proxy=1` in the guest, as the original passes it."""
    if req.tsi:
        return [], [("no_proxy", "1")]
    return [("krun.use_passt", "1")], [("AGENTBOX_LIBKRUN_USE_PASST", "1")]


def _diagnostics(req: LibkrunRequest) -> Pairs:
    """The guest's env for --profile and --debug (--debug is podman's own too: RunSpec.debug)."""
    env = [("AGENTBOX_GUEST_PROFILE", "1")] if req.profile else []
    if req.debug:
        env.append(("AGENTBOX_GUEST_DEBUG", "1"))
    return env


def _guest_init(req: LibkrunRequest) -> list[Mount]:
    if req.guest_init is None:
        return []
    return [Mount(req.guest_init, GUEST_INIT_PATH, readonly=True)]


def plan_libkrun(req: LibkrunRequest, host: KrunHost) -> LibkrunPlan:
    if req.tsi and req.publish:
        raise UsageError("--publish needs passt networking; it cannot be used with --tsi",
                         hint="drop --tsi (passt is the default) or drop --publish")  # fmt: skip
    if any(not p for p in req.publish):
        raise UsageError("--publish is empty", hint="give HOST:GUEST, like 8080:80")
    disks = (
        (LIBKRUN_NIX, req.state_dir / LIBKRUN_NIX.file_name),
        (LIBKRUN_CONTAINERS, req.state_dir / LIBKRUN_CONTAINERS.file_name),
    )
    annotations = [*_vm(req, host), ("krun.nested_virt", "1")]
    for index, (spec, path) in enumerate(disks):
        annotations += _disk(index, spec, path)
    net_annotations, net_env = _network(req)
    annotations += net_annotations
    rootless = host.uid != 0
    env = [
        # root on the host is root in the sandbox: dev cannot have uid 0
        *([("AGENTBOX_HOST_UID", str(host.uid)), ("AGENTBOX_HOST_GID", str(host.gid))]
          if rootless else [("AGENTBOX_ENTER_AS_ROOT", "1")]),
        ("AGENTBOX_KVM_DROP_TO_DEV", "1"),
        ("AGENTBOX_LIBKRUN_NIX_OVERLAY", "1"), ("AGENTBOX_LIBKRUN_CONTAINERS_STORAGE", "1"),
        *_disk_env("nix"), *_disk_env("containers"),
        ("SCCACHE_DIR", "/home/dev/.cache/sccache"),
        *net_env,
    ]  # fmt: skip
    if req.root and rootless:
        env.append(("AGENTBOX_ENTER_AS_ROOT", "1"))
    env += _diagnostics(req)
    cargo = req.state_dir / "cargo"
    mounts = [
        Mount(host.cwd, "/workspace"),
        *req.agent_mounts,
        Mount(host.home / ".codex", "/home/dev/.codex"),
        Mount(host.home / ".pi", "/home/dev/.pi"),
        Mount(cargo, "/home/dev/.cargo"),
        Mount(req.sccache, "/home/dev/.cache/sccache"),
        *_guest_init(req),
    ]
    run = RunSpec(
        image=req.image,
        name=req.task_name,
        command=req.command,
        interactive=not req.command or not host.stdin_tty,
        tty=host.stdin_tty and host.stdout_tty,
        runtime="crun",
        userns=_userns(host),
        user="0:0",
        hostname=req.hostname,
        workdir="/workspace",
        labels=((ROLE_LABEL, "libkrun-task"), (WORKSPACE_LABEL, req.workspace_key)),
        annotations=tuple(annotations),
        env=tuple(env),
        mounts=tuple(mounts),
        tmpfs=(TMP,),
        devices=(TUN,),
        publish=req.publish,
        debug=req.debug,
    )
    host_dirs = (host.home / ".codex", host.home / ".pi", cargo, req.sccache)
    return LibkrunPlan(run=run, disks=disks, host_dirs=host_dirs)


def plan_resize(req: LibkrunRequest, host: KrunHost, target: str) -> RunSpec:
    """The one-shot guest of `libkrun resize --target T`: a task's identity, VM size, network,
    diagnostics and guest init, with only T's disk (as krun.disk.0) and the guest init's
    `libkrun resize` verb as the entrypoint; nothing read from stdin."""
    if target not in TARGETS:
        raise UsageError(f"--target {target!r} is not nix or containers")
    spec = TARGETS[target]
    net_annotations, net_env = _network(req)
    disk = _disk(0, spec, req.state_dir / spec.file_name)
    return RunSpec(
        image=req.image,
        name=f"{req.task_name}-resize",
        command=("libkrun", "resize", "--target", target),
        runtime="crun",
        userns=_userns(host),
        user="0:0",
        hostname=req.hostname,
        entrypoint=GUEST_INIT_PATH,
        labels=((ROLE_LABEL, "libkrun-resize"), (WORKSPACE_LABEL, req.workspace_key)),
        annotations=(*_vm(req, host), *disk, *net_annotations),
        env=(*_disk_env(target), *net_env, *_diagnostics(req)),
        mounts=tuple(_guest_init(req)),
        tmpfs=(TMP,),
        devices=(TUN,),
        debug=req.debug,
    )
