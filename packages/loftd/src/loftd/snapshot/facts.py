"""What a snapshot plan starts from, read from the state dir: the project's persistent items,
its snapshots with their manifests, who holds its locks and leases, whether files there can be
reflinked. Locks are probed as ``agentbox disks``/``forget`` probe them."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from agentbox_state.errors import AgentboxError
from agentbox_state.lock import FileLock
from agentbox_state.runner import Runner
from agentbox_storage import snapshot
from agentbox_storage.snapshot import Manifest
from agentbox_storage.statedir import lock_files, mount_points
from loftd.snapshot.hooks import StateHooks

SNAPSHOTS = "snapshots"
# What outlives a run besides the raw disks (``*.raw``): container mode's /nix overlay upper,
# loftd's, and the cargo dir.
ITEM_DIRS = ("nix/upper", "nix-overlay/upper", "cargo")
MERGED = ("nix/merged",)  # container mode's overlay mount over nix/upper (kept when idle)


@dataclass(frozen=True, slots=True, kw_only=True)
class Present:
    path: str  # relative to the state dir
    kind: str
    size: int
    allocated: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Taken:
    name: str
    manifest: Manifest | None
    problem: str | None  # why it is damaged (None: it validates)


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotFacts:
    app: str  # the command line's name, for messages
    stop: str  # its command that stops a running task ("" if it has none), for hints
    state_dir: Path
    items: tuple[Present, ...]
    snapshots: tuple[Taken, ...]
    running: tuple[str, ...]  # why the project's state is in use now
    mounted: tuple[str, ...]  # overlay mounts over its items
    reflink: bool
    image: str  # the image ID the project last ran (container mode's sidecar), or ""

    @property
    def snapshots_dir(self) -> Path:
        return self.state_dir / SNAPSHOTS


def _reason(state_dir: Path, path: Path, holder: str) -> str:
    rel = path.relative_to(state_dir)
    if rel.parts[0] == "tasks":
        return f"task {rel.parts[1]} runs (its lock is held by {holder})"
    if path.name == "sidecar-users.lock":
        return f"a container task of this project runs (it holds {rel}: {holder})"
    if path.name.endswith(".lease"):
        return f"disk {path.name.removesuffix('.lease')} is attached (leased by {holder})"
    return f"{rel} is held by {holder}"


def running(state_dir: Path) -> tuple[str, ...]:
    found = []
    for path in lock_files(state_dir):
        probe = FileLock(path, what=path.name).probe()
        if probe is not None and probe.held:
            found.append(_reason(state_dir, path, probe.holder))
    return tuple(found)


def present(state_dir: Path) -> tuple[Present, ...]:
    names = sorted(os.listdir(state_dir)) if state_dir.is_dir() else []
    found = [
        n for n in names if n.endswith(".raw") and stat.S_ISREG((state_dir / n).lstat().st_mode)
    ]
    found += [rel for rel in ITEM_DIRS if (state_dir / rel).is_dir()]
    items = []
    for rel in found:
        kind, size, allocated = snapshot.measure(state_dir / rel)
        items.append(Present(path=rel, kind=kind, size=size, allocated=allocated))
    return tuple(items)


def taken(snapshots_dir: Path) -> tuple[Taken, ...]:
    names = sorted(os.listdir(snapshots_dir)) if snapshots_dir.is_dir() else []
    found = []
    for name in names:
        if name.startswith("."):  # a create or restore in progress, or a killed one's leftover
            continue
        try:
            manifest = snapshot.read_manifest(snapshots_dir / name)
        except AgentboxError as err:
            found.append(Taken(name=name, manifest=None, problem=err.message))
            continue
        bad = snapshot.problems(snapshots_dir / name, manifest)
        found.append(Taken(name=name, manifest=manifest, problem="; ".join(bad) or None))
    return tuple(found)


def snapshot_facts(state_dir: Path, runner: Runner, hooks: StateHooks, *, app: str,
                   probe_reflink: bool = True) -> SnapshotFacts:  # fmt: skip
    mounts = mount_points()
    snapshots_dir = state_dir / SNAPSHOTS
    reflink = False
    if probe_reflink and state_dir.is_dir():  # snapshots/ is on the state dir's filesystem
        reflink = snapshot.can_reflink(state_dir, runner)
    sidecar = hooks.recorded(state_dir)
    # a rootless sidecar's overlay is mounted in Podman's user namespace, out of our sight:
    # its state record says so ("mounted": the image ID it was mounted for)
    mounted = [rel for rel in MERGED if os.fspath(state_dir / rel) in mounts]
    if sidecar.get("mounted") and MERGED[0] not in mounted:
        mounted.append(MERGED[0])
    return SnapshotFacts(
        app=app, stop=hooks.stop, state_dir=state_dir, items=present(state_dir),
        snapshots=taken(snapshots_dir), running=running(state_dir), reflink=reflink,
        image=sidecar.get("image_id", ""), mounted=tuple(mounted),
    )  # fmt: skip
