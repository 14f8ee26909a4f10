"""What exists under the state dir and who holds what: the facts ``disks``, ``gc`` and
``forget`` are planned from (``plan.py`` is pure; this module reads the disk and probes locks).

Whether something is in use is always its lock's answer (``FileLock.probe``: held by a live
process, or free); which task roots killed runs left is ``taskroot.collect_garbage``'s own
answer (``dry_run``), and which staging dirs killed ingests left is ``clean_staging``'s.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from agentbox_state.lock import FileLock, LockProbe
from agentbox_state.runner import Runner
from agentbox_storage import disks, taskroot
from agentbox_storage.disks import DiskUsage
from agentbox_storage.imagecache import ImageCache
from agentbox_storage.statedir import lock_files, mount_points, names

TASK_MIN_AGE = 60.0  # seconds: loftd.execute.GC_MIN_AGE (a task dir this young may be starting)
SIDECAR_STATE = "nix-sidecar.state"  # container mode's (agentbox_cli.container.plan)
UPPERS = ("nix/upper", "nix-overlay/upper")  # container mode's sidecar, loftd's /nix overlay
NOT_CACHES = ("locks", "tasks", "nix", "nix-overlay")


@dataclass(frozen=True, slots=True)
class Usage:
    apparent: int = 0
    allocated: int = 0
    last_used: float | None = None  # the newest mtime found


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseFact:
    path: Path
    probe: LockProbe


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskFact:
    usage: DiskUsage
    lease: LockProbe | None
    last_used: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeFact:
    kind: str  # "overlay-upper" or "cache"
    path: Path
    usage: Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFact:
    path: Path
    abandoned: bool  # collect_garbage would remove it
    lock: LockProbe | None
    preserved: bool
    usage: Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class SidecarFact:
    name: str
    image: str
    merged: Path
    users: LockProbe | None  # sidecar-users.lock: held shared by every running task
    setup: LockProbe | None  # sidecar.lock: held while one starts or is removed


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectFacts:
    key: str
    state_dir: Path
    current: bool
    disks: tuple[DiskFact, ...]
    trees: tuple[TreeFact, ...]
    tasks: tuple[TaskFact, ...]
    sidecar: SidecarFact | None
    leases: tuple[LeaseFact, ...]
    usage: Usage  # the whole state dir


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryFact:
    digest: str
    path: Path
    refs: tuple[str, ...]
    usage: Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepFacts:
    base: Path
    images: Path
    sccache: Path
    projects: tuple[ProjectFacts, ...]
    entries: tuple[EntryFact, ...]
    staging: tuple[tuple[Path, Usage], ...]
    image_leases: tuple[LeaseFact, ...]
    image_cache: Usage
    sccache_usage: Usage


def tree_usage(path: Path, mounts: frozenset[str] = frozenset()) -> Usage:
    """Apparent and allocated bytes of a file or tree, not descending into mounts (a task's
    fuse-overlay shows the image) nor following symlinks; what cannot be read is not counted."""
    apparent = allocated = 0
    newest: float | None = None
    stack = [os.fspath(path)]
    while stack:
        here = stack.pop()
        try:
            st = os.lstat(here)
        except OSError:
            continue
        apparent += st.st_size if not stat.S_ISDIR(st.st_mode) else 0
        allocated += st.st_blocks * 512
        newest = st.st_mtime if newest is None else max(newest, st.st_mtime)
        if stat.S_ISDIR(st.st_mode) and (here == os.fspath(path) or here not in mounts):
            try:
                stack += [os.path.join(here, name) for name in os.listdir(here)]
            except OSError:
                continue
    return Usage(apparent, allocated, newest)


def _lease(path: Path) -> LeaseFact | None:
    probe = FileLock(path, what=path.name).probe()
    return None if probe is None else LeaseFact(path=path, probe=probe)


def _sidecar(state_dir: Path) -> SidecarFact | None:
    from agentbox_cli.container import sidecar
    from agentbox_cli.container.plan import sidecar_name

    path = state_dir / SIDECAR_STATE
    if not path.exists():
        return None
    state = sidecar.read_state(path)
    return SidecarFact(
        name=state.get("name") or sidecar_name(state_dir.name), image=state.get("image", ""),
        merged=state_dir / "nix" / "merged", users=sidecar.users_lock(state_dir).probe(),
        setup=sidecar.setup_lock(state_dir).probe(),
    )  # fmt: skip


def _tasks(tasks_dir: Path, runner: Runner, mounts: frozenset[str]) -> tuple[TaskFact, ...]:
    if not tasks_dir.is_dir():
        return ()
    gone = set(taskroot.collect_garbage(tasks_dir, runner, min_age=TASK_MIN_AGE, dry_run=True))
    found = []
    for path in sorted(tasks_dir.iterdir()):
        try:
            if not stat.S_ISDIR(path.lstat().st_mode):
                continue
        except OSError:
            continue
        found.append(TaskFact(
            path=path, abandoned=path in gone, lock=taskroot.task_lock(path).probe(),
            preserved=(path / taskroot.PRESERVED_NAME).exists(), usage=tree_usage(path, mounts),
        ))  # fmt: skip
    return tuple(found)


def project_facts(state_dir: Path, runner: Runner, *, current: bool,
                  mounts: frozenset[str]) -> ProjectFacts:  # fmt: skip
    found_disks, trees = [], []
    for path in [state_dir / n for n in names(state_dir) if n.endswith(".raw")]:
        lease_path = disks.lease(path).path
        stamps = [os.lstat(p).st_mtime for p in (path, lease_path) if os.path.lexists(p)]
        found_disks.append(DiskFact(usage=disks.disk_usage(path, runner),
                                    lease=disks.lease(path).probe(),
                                    last_used=max(stamps, default=None)))  # fmt: skip
    for rel in UPPERS:
        if (state_dir / rel).is_dir():
            trees.append(TreeFact(kind="overlay-upper", path=state_dir / rel,
                                  usage=tree_usage(state_dir / rel, mounts)))  # fmt: skip
    for path in sorted(state_dir.iterdir()) if state_dir.is_dir() else ():
        if path.name not in NOT_CACHES and path.is_dir() and not path.is_symlink():
            trees.append(TreeFact(kind="cache", path=path, usage=tree_usage(path, mounts)))
    leases = [lease for p in lock_files(state_dir) if (lease := _lease(p)) is not None]
    return ProjectFacts(
        key=state_dir.name, state_dir=state_dir, current=current, disks=tuple(found_disks),
        trees=tuple(trees), tasks=_tasks(state_dir / "tasks", runner, mounts),
        sidecar=_sidecar(state_dir), leases=tuple(leases), usage=tree_usage(state_dir, mounts),
    )  # fmt: skip


def keep_facts(base: Path, images: Path, sccache: Path, workspaces: Path, runner: Runner, *,
               current: str | None, only: str | None = None) -> KeepFacts:  # fmt: skip
    """The facts of every project under ``workspaces`` (or just the one keyed ``only``) and of
    the image cache; ``current`` is the key of the project of the current directory."""
    mounts = mount_points()
    dirs = sorted(p for p in workspaces.iterdir() if p.is_dir()) if workspaces.is_dir() else []
    projects = tuple(project_facts(p, runner, current=p.name == current, mounts=mounts)
                     for p in dirs if only is None or p.name == only)  # fmt: skip
    cache = ImageCache(images)
    hints = cache.hints()
    entries = tuple(EntryFact(digest=e.digest, path=e.path,
                              refs=tuple(hints.get(e.digest, ())),
                              usage=tree_usage(e.path, mounts))
                    for e in cache.entries())  # fmt: skip
    staging = tuple((p, tree_usage(p, mounts)) for p in cache.clean_staging(runner, dry_run=True))
    locks = [images / a / n for a in names(images) for n in names(images / a)
             if n.startswith(".") and n.endswith(".lock")]  # fmt: skip
    image_leases = [lease for p in locks if (lease := _lease(p)) is not None]
    return KeepFacts(
        base=base, images=images, sccache=sccache, projects=projects, entries=entries,
        staging=staging, image_leases=tuple(image_leases), image_cache=tree_usage(images, mounts),
        sccache_usage=tree_usage(sccache, mounts),
    )  # fmt: skip
