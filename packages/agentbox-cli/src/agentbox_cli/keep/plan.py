"""From the facts (``facts.py``) to what ``gc`` would remove, what ``forget`` would remove (or
why it is refused) and what ``disks`` shows: pure functions of frozen records.

gc removes only what nothing uses: task roots of killed runs, staging of killed ingests, idle
Nix sidecars (their overlay mounts; the upper stays), image-cache entries no tag names while no
task runs, and stale lease records. It never plans a persistent disk, an overlay upper, a cache
or a project's state dir: only ``forget`` removes those, one project at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from agentbox_cli.keep.facts import KeepFacts, LeaseFact, ProjectFacts, SidecarFact, TaskFact
from agentbox_state.lock import LockProbe
from agentbox_state.parse import human_size as human

TASK, STAGING, ENTRY, SIDECAR, LEASE = (
    "task-root", "ingest-staging", "image-entry", "sidecar", "stale-lease",
)  # fmt: skip
SCHEMA_ID = "agentbox-disks/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class GcItem:
    kind: str
    path: Path
    reason: str
    size: int  # bytes the host gets back (allocated)
    project: str | None = None  # the workspace key, for what belongs to one
    detail: str = ""  # a sidecar's image, an entry's digest

    def describe(self) -> str:
        return f"{self.kind} {self.path}: {human(self.size)} ({self.reason})"


@dataclass(frozen=True, slots=True, kw_only=True)
class GcPlan:
    items: tuple[GcItem, ...]
    kept: tuple[str, ...]  # what looks unused but stays, and why

    @property
    def total(self) -> int:
        return sum(item.size for item in self.items)

    def describe(self, *, dry_run: bool) -> list[str]:
        lines = [item.describe() for item in self.items]
        lines += [f"kept: {why}" for why in self.kept]
        verb = "would free" if dry_run else "frees"
        if not self.items:
            return [*lines, "nothing to remove"]
        return [*lines, f"{len(self.items)} item(s); {verb} {human(self.total)}"]


def _stale(lease: LeaseFact) -> str | None:
    """Why a lease record is stale (free, with the pid of a holder that is gone), or None."""
    if lease.probe.held or lease.probe.pid is None:
        return None
    return f"its lock is free but records pid {lease.probe.pid}, a holder killed while holding it"


def _task_kept(task: TaskFact) -> str | None:
    if task.abandoned or (task.lock is not None and task.lock.held):
        return None
    if task.preserved:
        return f"task root {task.path} (kept by --preserve-debug; agentbox forget removes it)"
    return f"task root {task.path} (changed in the last minute: its run may be starting)"


def _sidecar_item(car: SidecarFact, key: str) -> GcItem:
    busy = ("" if car.setup is None or not car.setup.held
            else f" (its setup lock is held by {car.setup.holder}: gc waits for it)")  # fmt: skip
    return GcItem(kind=SIDECAR, path=car.merged, size=0, project=key, detail=car.image,
                  reason=f"idle Nix sidecar {car.name}: no task holds it; its container and "
                  f"overlay mount go, its upper stays{busy}")  # fmt: skip


def _project_items(project: ProjectFacts) -> tuple[list[GcItem], list[str]]:
    items, kept = [], []
    for task in project.tasks:
        if task.abandoned:
            items.append(GcItem(kind=TASK, path=task.path, size=task.usage.allocated,
                                reason="left by a killed run: its task lock is free",
                                project=project.key))  # fmt: skip
        elif (why := _task_kept(task)) is not None:
            kept.append(why)
    car = project.sidecar
    # only a task holds the users lock; the setup lock is held for moments by a starting task
    # or a reaper, and removing waits for it, then checks the users lock again
    if car is not None and (car.users is None or not car.users.held):
        items.append(_sidecar_item(car, project.key))
    gone_tasks = {t.path for t in project.tasks if t.abandoned}
    for lease in project.leases:
        if lease.path.parent in gone_tasks:
            continue  # goes with its task dir
        if (why := _stale(lease)) is not None:
            items.append(GcItem(kind=LEASE, path=lease.path, size=0, reason=why,
                                project=project.key))  # fmt: skip
    return items, kept


def plan_gc(facts: KeepFacts) -> GcPlan:
    items: list[GcItem] = []
    kept: list[str] = []
    for project in facts.projects:
        found, stays = _project_items(project)
        items += found
        kept += stays
    items += [GcItem(kind=STAGING, path=path, size=usage.allocated,
                     reason="staging of a killed ingest: its digest lock is free")
              for path, usage in facts.staging]  # fmt: skip
    running = [t.path.name for p in facts.projects for t in p.tasks
               if t.lock is not None and t.lock.held]  # fmt: skip
    for entry in facts.entries:
        if entry.refs:
            continue
        if running:
            kept.append(f"image-entry {entry.path} (no tag names it, but task "
                        f"{running[0]} runs and may use it)")  # fmt: skip
            continue
        items.append(GcItem(kind=ENTRY, path=entry.path, size=entry.usage.allocated,
                            detail=entry.digest,
                            reason="no tag names it now and no task runs"))  # fmt: skip
    items += [GcItem(kind=LEASE, path=lease.path, size=0, reason=why)
              for lease in facts.image_leases if (why := _stale(lease)) is not None]  # fmt: skip
    return GcPlan(items=tuple(items), kept=tuple(kept))


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgetPlan:
    workspace: str
    project: ProjectFacts
    running: tuple[str, ...]  # why removing it now is refused

    @property
    def total(self) -> int:
        return self.project.usage.allocated

    def describe(self) -> list[str]:
        p = self.project
        lines = [f"disk {d.usage.path}: {human(d.usage.allocated)}" for d in p.disks]
        lines += [f"{t.kind} {t.path}: {human(t.usage.allocated)}" for t in p.trees]
        lines += [f"task-root {t.path}: {human(t.usage.allocated)}" for t in p.tasks]
        if p.sidecar is not None:
            lines.append(f"sidecar {p.sidecar.name}: its container and overlay mount")
        lines.append(f"the state dir {p.state_dir} with all of the above: {human(self.total)}")
        lines += [f"in use: {why}" for why in self.running]
        return lines


def _held(lease: LeaseFact, project: ProjectFacts) -> str | None:
    if not lease.probe.held:
        return None
    by = lease.probe.holder
    rel = lease.path.relative_to(project.state_dir)
    if rel.parts[0] == "tasks":
        return f"task {rel.parts[1]} runs (its lock is held by {by})"
    if lease.path.name == "sidecar-users.lock":
        return f"a container task of this project runs (it holds {rel}: {by})"
    if lease.path.name.endswith(".lease"):
        return f"disk {lease.path.name.removesuffix('.lease')} is attached (leased by {by})"
    return f"{rel} is held by {by}"


def plan_forget(project: ProjectFacts, workspace: str) -> ForgetPlan:
    running = tuple(why for lease in project.leases if (why := _held(lease, project)) is not None)
    return ForgetPlan(workspace=workspace, project=project, running=running)


# -- disks --------------------------------------------------------------------------------------
def _when(stamp: float | None) -> str | None:
    return None if stamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def _holder(probe: LockProbe | None) -> str | None:
    return probe.holder if probe is not None and probe.held else None


def _items(project: ProjectFacts) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for d in project.disks:
        u = d.usage
        rows.append({"kind": "disk", "path": str(u.path), "apparent": u.apparent,
                     "allocated": u.allocated, "leased_by": _holder(d.lease),
                     "last_used": d.last_used, "label": u.label, "valid": u.valid,
                     "problem": u.problem})  # fmt: skip
    for t in project.trees:
        rows.append({"kind": t.kind, "path": str(t.path), "apparent": t.usage.apparent,
                     "allocated": t.usage.allocated, "leased_by": None,
                     "last_used": t.usage.last_used, "label": None, "valid": None,
                     "problem": None})  # fmt: skip
    for task in project.tasks:
        rows.append({"kind": "task-root", "path": str(task.path), "apparent": task.usage.apparent,
                     "allocated": task.usage.allocated, "leased_by": _holder(task.lock),
                     "last_used": task.usage.last_used, "label": None, "valid": None,
                     "problem": "left by a killed run (agentbox gc removes it)"
                     if task.abandoned else None})  # fmt: skip
    return rows


def disks_report(facts: KeepFacts) -> dict[str, object]:
    """``agentbox disks --json`` (``schema.json``)."""
    projects = [{"key": p.key, "state_dir": str(p.state_dir), "current": p.current,
                 "apparent": p.usage.apparent, "allocated": p.usage.allocated,
                 "items": _items(p)} for p in facts.projects]  # fmt: skip
    return {
        "schema": SCHEMA_ID, "base": str(facts.base), "projects": projects,
        "image_cache": {"path": str(facts.images), "apparent": facts.image_cache.apparent,
                        "allocated": facts.image_cache.allocated,
                        "entries": len(facts.entries)},
        "sccache": {"path": str(facts.sccache), "apparent": facts.sccache_usage.apparent,
                    "allocated": facts.sccache_usage.allocated},
    }  # fmt: skip


def render_disks(report: dict[str, object]) -> str:
    lines: list[str] = []
    projects = report["projects"]
    assert isinstance(projects, list)
    for p in projects:
        here = " (this directory's project)" if p["current"] else ""
        lines.append(f"{p['key']}{here}: {p['state_dir']}, {human(p['allocated'])} on disk")
        for row in p["items"]:
            leased = f", leased by {row['leased_by']}" if row["leased_by"] else ""
            used = f", last used {_when(row['last_used'])}" if row["last_used"] else ""
            note = f" ({row['problem']})" if row["problem"] else ""
            lines.append(f"  {row['kind']} {row['path']}: {human(row['apparent'])} apparent, "
                         f"{human(row['allocated'])} allocated{leased}{used}{note}")  # fmt: skip
    if not projects:
        lines.append(f"no project has state under {report['base']} yet")
    for name, key in (("image cache", "image_cache"), ("shared sccache", "sccache")):
        total = report[key]
        assert isinstance(total, dict)
        entries = f" in {total['entries']} entries" if "entries" in total else ""
        lines.append(f"{name} {total['path']}: {human(total['allocated'])} allocated{entries}")
    return "\n".join(lines)
