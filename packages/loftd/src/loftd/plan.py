"""A direct-libkrun run as a frozen plan, built purely from the request and the host's facts:
the ingest on a miss, the task root, the /nix overlay, the disks, launch.conf and the helper's
argv. ``describe()`` is what ``--dry-run`` prints; ``loftd.execute`` carries it out."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentbox_krun import enter, kvm, launchconf
from agentbox_krun.launchconf import Disk, LaunchConf, Mount, NixOverlay
from agentbox_state.errors import AgentboxError
from agentbox_state.parse import format_size
from agentbox_storage import taskroot
from agentbox_storage.backends import Backend
from agentbox_storage.disks import DiskSpec
from agentbox_storage.imagecache import ImageCache, pinned_digest
from loftd import guest
from loftd.facts import DigestAnswer, HostFacts
from loftd.runtime import Face, TaskRequest

WORKDIR = "/workspace"
DEFAULT_COMMAND = ("fish", "-l")
CONF_NAME = "launch.conf"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskPlan:
    name: str  # the app's, for messages
    image: str
    task_id: str
    kvm: kvm.KvmFacts | None  # checked first (None: the opt-out is set)
    env_prefix: str
    images_dir: Path
    ingest: tuple[str, ...] | None  # the ingest child's argv on a miss
    source: Path | None  # the cached rootfs (None until the ingest says which digest it made)
    backends: tuple[Backend, ...]  # tried in order
    state_dir: Path
    task_dir: Path
    userns: tuple[str, ...]  # Buildah's user namespace (rootless) for the task root's commands
    guest_init: str  # in the image; checked in the task root
    guest_init_override: Path | None
    nix_overlay: NixOverlay | None  # lower: the source's /nix (once the source is known)
    disks: tuple[tuple[DiskSpec, Path], ...]
    launch: LaunchConf  # as planned: the first backend's root, the guest init where expected
    conf_path: Path
    helper_argv: tuple[str, ...]
    helper_env: tuple[tuple[str, str], ...]
    preserve: bool
    remember: DigestAnswer | None  # Buildah's new answer for the image's digest, kept by the run

    def describe(self) -> list[str]:
        prefix = f"{self.env_prefix}{kvm.SKIP_SUFFIX}"
        refused = kvm.problem(self.kvm) if self.kvm is not None else None
        check = (f"not checked ({prefix}=1)" if self.kvm is None
                 else f"checked first: refused: {refused}" if refused
                 else "checked first: can boot a VM")  # fmt: skip
        first = taskroot.layout(self.backends[0], self.task_dir)
        then = "".join(f", else {b.value}" for b in self.backends[1:])
        lines = [
            f"{self.name}: task {self.task_id}, image {self.image}",
            f"kvm: {check}",
            *([f"image cache: miss: {shlex.join(self.ingest)}"] if self.ingest else
              [f"image cache: hit: {self.source}"]),
            f"task root: {self.backends[0].value} at {first.rootfs}{then} (from "
            f"{self.source or 'the ingested image'}"
            + (f", in {shlex.join(self.userns)}" if self.userns else "") + ")",
            f"guest init: /{self.guest_init.lstrip('/')} in the task root"
            + (f" (replaced by {self.guest_init_override})" if self.guest_init_override else ""),
        ]  # fmt: skip
        if self.nix_overlay is not None:
            n = self.nix_overlay
            lines.append(f"/nix overlay: {n.lease} probed (one task per upper), {n.upper} and "
                         f"{n.work} made")  # fmt: skip
        lines += [f"disk {spec.block_id}: {path} ({spec.purpose}; made sparse "
                  f"{format_size(spec.default_size)} btrfs if missing; leased)"
                  for spec, path in self.disks]  # fmt: skip
        lines.append(f"{self.conf_path} (the task root and guest init as found once made):")
        lines += [f"  {line}" for line in launchconf.render(self.launch).splitlines()]
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.helper_env)
        lines.append(f"helper: {env} {shlex.join(self.helper_argv)}")
        lines.append(f"then: the guest's report in {guest.STATUS_PATH} tells its status; "
                     + (f"{self.task_dir} is kept (--preserve-debug)" if self.preserve
                        else f"{self.task_dir} is removed"))  # fmt: skip
        return lines


def helper_in_userns(face: Face, req: TaskRequest) -> bool:
    """Whether the helper runs inside ``buildah unshare``: rootless, with mounts to make (the
    grafts need a mount namespace, and the /nix overlay's lower layer is the cache, whose files
    only make sense in the user namespace that wrote them; as the original did)."""
    return req.uid != 0 and (face.nix_overlay_dir is not None or face.workspace_tag is None)


def guest_env(face: Face, req: TaskRequest) -> tuple[str, ...]:
    """The guest init's environment: the contract every app shares (with the app's prefix),
    then the app's own."""
    p = face.env_prefix
    env = []
    if face.workspace_tag is not None and face.workspace_tag_env is not None:
        env.append(f"{face.workspace_tag_env}={face.workspace_tag}")
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
    return (*env, *face.guest_env)


def helper_env(face: Face, library: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The helper's extra environment (pure): the library this process found, and the user's
    loader and logging variables."""
    from loftd.facts import HELPER_PASSTHROUGH

    env = {k: environ[k] for k in HELPER_PASSTHROUGH if environ.get(k)}
    env[face.library_env] = library
    return env


def nix_overlay(face: Face, req: TaskRequest, source: Path | None) -> NixOverlay | None:
    """The host /nix overlay's dirs under ``<state>/<nix_overlay_dir>`` (upper and work persist
    across tasks; ``lease`` is held by the helper while the VM runs: one overlay per upper)."""
    if face.nix_overlay_dir is None:
        return None
    base = req.state_dir / face.nix_overlay_dir
    lower = (source or req.images_dir / "<ingested digest>" / "rootfs") / "nix"
    return NixOverlay(os.fspath(lower), os.fspath(base / "upper"), os.fspath(base / "work"),
                      os.fspath(base / "lease"))  # fmt: skip


def _shares(face: Face, req: TaskRequest) -> tuple[tuple[launchconf.Share, ...], tuple[str, ...]]:
    """The request's shares over virtiofs (tags after the workspace's) and the variable that
    tells the guest where each goes; none without a workspace tag (they are grafted then)."""
    if face.workspace_tag is None or not req.shares:
        return (), ()
    if face.shares_env is None:
        raise AgentboxError(f"{face.name} cannot share more than the workspace")
    import json

    tags = [f"{face.workspace_tag}-{i}" for i in range(1, len(req.shares) + 1)]
    listed = [[tag, sh.target, sh.readonly] for tag, sh in zip(tags, req.shares, strict=True)]
    shares = tuple(launchconf.Share(tag, os.fspath(sh.source), sh.readonly)
                   for tag, sh in zip(tags, req.shares, strict=True))  # fmt: skip
    return shares, (f"{face.shares_env}={json.dumps(listed, separators=(',', ':'))}",)


def plan_task(face: Face, req: TaskRequest, host: HostFacts) -> TaskPlan:
    if host.cached is not None:
        source: Path | None = host.cached.rootfs
    else:
        known = pinned_digest(req.image) or host.current
        source = ImageCache(req.images_dir).entry(known).rootfs if known else None
    ingest = None
    if host.cached is None:
        from loftd.ingest import ingest_argv  # Buildah's image source: only for a miss

        prefix = list(host.userns)
        build = ingest_argv(prefix, host.python, req.images_dir, face.guest_init, req.pull,
                            debug=req.debug)  # fmt: skip
        ingest = tuple(build(req.image, pinned_digest(req.image)))
    task_dir = req.state_dir / "tasks" / req.task_id
    conf_path = task_dir / CONF_NAME
    nix = nix_overlay(face, req, source)
    workspace = os.fspath(req.workspace)
    tag = face.workspace_tag
    shares, share_env = _shares(face, req)
    disks = tuple((spec, req.state_dir / spec.file_name) for spec in face.disks)
    launch = LaunchConf(
        task_rootfs=os.fspath(taskroot.layout(host.backends[0], task_dir).rootfs),
        ram_mib=req.ram_mib, vcpus=req.vcpus, workdir=WORKDIR,
        exec_path="/" + face.guest_init.lstrip("/"),
        argv=(*face.guest_argv, *(req.command or DEFAULT_COMMAND)),
        env=(*guest_env(face, req), *share_env),
        disks=tuple(Disk(spec.block_id, os.fspath(path), False) for spec, path in disks),
        workspace_source=workspace if tag else None, workspace_tag=tag,
        workspace_target=WORKDIR if tag else None,
        mounts=() if tag else (Mount(workspace, WORKDIR, False), *(
            Mount(os.fspath(sh.source), sh.target, sh.readonly) for sh in req.shares)),
        shares=shares,
        nix_overlay=nix, init_log=face.init_log, nested_virt=face.nested_virt,
        task_lock=os.fspath(taskroot.task_lock(task_dir).path), image=req.image,
    )  # fmt: skip
    wrap = host.userns if helper_in_userns(face, req) else ()
    helper = enter.argv(host.python, face.library_env, conf_path)
    return TaskPlan(
        name=face.name, image=req.image, task_id=req.task_id, kvm=host.kvm,
        env_prefix=face.env_prefix, images_dir=req.images_dir, ingest=ingest, source=source,
        backends=host.backends, state_dir=req.state_dir, task_dir=task_dir, userns=host.userns,
        guest_init=face.guest_init, guest_init_override=req.guest_init_override,
        nix_overlay=nix, disks=disks, launch=launch, conf_path=conf_path,
        helper_argv=(*wrap, *helper),
        helper_env=tuple(helper_env(face, host.library, dict(host.passthrough)).items()),
        preserve=req.preserve, remember=host.remember,
    )  # fmt: skip
