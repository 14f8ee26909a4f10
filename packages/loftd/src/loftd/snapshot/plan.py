"""Pure planning of ``snapshot create|restore|delete`` (agentbox's and loftd's) from
``SnapshotFacts``: the refusals (a bad name, a task running, an unknown or damaged snapshot, a
filesystem that cannot reflink without ``--copy``) and the steps, each with ``describe()``
(``--dry-run`` prints them)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from agentbox_state.errors import AgentboxError
from agentbox_state.parse import human_size as human
from agentbox_storage.snapshot import Item, Manifest
from loftd.snapshot.facts import Present, SnapshotFacts, Taken

MAX_NAME = 64
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-")
AUTO_PREFIX = "auto-before-restore-"


class SnapshotError(AgentboxError):
    """A snapshot verb refused: nothing was changed."""


def check_name(name: str) -> str:
    """``name`` when it is a safe snapshot name: 1-64 of letters, digits and ``. _ + -``, not
    starting with a dot or a dash (so no path, no hidden or option-like name)."""
    hint = (
        "a snapshot name is 1-64 letters, digits, '.', '_', '+' or '-', not starting with "
        "'.' or '-'"
    )
    if not name:
        raise SnapshotError("a snapshot name is needed (it is empty)", hint=hint)
    if len(name) > MAX_NAME:
        raise SnapshotError(f"the snapshot name {name[:20]!r}... is {len(name)} characters long "
                            f"(at most {MAX_NAME})", hint=hint)  # fmt: skip
    bad = sorted(set(name) - NAME_CHARS)
    if bad or name[0] in ".-":
        why = f"holds {''.join(bad)!r}" if bad else f"starts with {name[0]!r}"
        raise SnapshotError(f"refusing the snapshot name {name!r}: it {why}", hint=hint)
    return name


@dataclass(frozen=True, slots=True, kw_only=True)
class Copy:
    source: Path
    dest: Path
    full: bool  # --copy: every byte, no sharing
    size: int

    def describe(self) -> str:
        how = f"copy in full ({human(self.size)})" if self.full else "copy-on-write"
        return f"{how} {self.source} -> {self.dest}"


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteManifest:
    snapshot: Path
    manifest: Manifest

    def describe(self) -> str:
        return f"write {self.snapshot}/manifest.json ({len(self.manifest.items)} item(s))"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rename:
    source: Path
    dest: Path

    def describe(self) -> str:
        return f"rename {self.source} -> {self.dest}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Remove:
    path: Path

    def describe(self) -> str:
        return f"remove {self.path}"


Step = Copy | WriteManifest | Rename | Remove


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotPlan:
    app: str  # the command line's name, for describe()
    action: str
    name: str
    steps: tuple[Step, ...]

    def describe(self) -> list[str]:
        return [f"{self.app} snapshot {self.action} {self.name}:",
                *(f"  {s.describe()}" for s in self.steps)]  # fmt: skip


def stop_it(stop: str) -> str:
    return f"or stop it: {stop}" if stop else "or stop it"


def _refuse_running(facts: SnapshotFacts, what: str) -> None:
    if facts.running:
        raise SnapshotError(
            f"refusing to {what} while the project's state is in use: " + "; ".join(facts.running),
            hint=f"wait for that task to end ({stop_it(facts.stop)}) and retry; nothing changed",
        )


def _refuse_no_reflink(facts: SnapshotFacts, what: str, size: int, copy: bool) -> None:
    if facts.reflink or copy:
        return
    raise SnapshotError(
        f"cannot {what} copy-on-write: {facts.state_dir} is on a filesystem that cannot "
        f"reflink (cp --reflink=always fails there)",
        hint=f"--copy makes a full copy instead: {human(size)} written; or keep {facts.app}'s "
        "state on btrfs (or XFS with reflink)",
    )


def _find(facts: SnapshotFacts, name: str) -> Taken:
    for taken in facts.snapshots:
        if taken.name == name:
            return taken
    known = ", ".join(t.name for t in facts.snapshots) or "none"
    raise SnapshotError(f"no snapshot named {name!r} in this project (snapshots: {known})",
                        hint=f"{facts.app} snapshot list shows them")  # fmt: skip


def _taking(facts: SnapshotFacts, name: str, *, copy: bool, now: float, version: str,
            items: tuple[Present, ...]) -> tuple[Step, ...]:  # fmt: skip
    final = facts.snapshots_dir / name
    staging = facts.snapshots_dir / f".creating-{name}"
    steps: list[Step] = [Remove(path=staging)]
    steps += [Copy(source=facts.state_dir / i.path, dest=staging / i.path, full=copy,
                   size=i.size) for i in items]  # fmt: skip
    manifest = Manifest(
        created=now,
        agentbox=version,
        image=facts.image,
        items=tuple(
            Item(path=i.path, kind=i.kind, size=i.size, allocated=i.allocated) for i in items
        ),
    )
    return (*steps, WriteManifest(snapshot=staging, manifest=manifest),
            Rename(source=staging, dest=final))  # fmt: skip


def plan_create(facts: SnapshotFacts, name: str, *, copy: bool, now: float,
                version: str) -> SnapshotPlan:  # fmt: skip
    check_name(name)
    _refuse_running(facts, f"snapshot it as {name!r}")
    if any(t.name == name for t in facts.snapshots):
        raise SnapshotError(
            f"a snapshot named {name!r} exists already",
            hint=f"choose another name, or {facts.app} snapshot delete {name}",
        )
    if not facts.items:
        raise SnapshotError(f"this project has no state to snapshot yet ({facts.state_dir} holds "
                            "no disk, overlay upper or cargo dir)",
                            hint=f"run {facts.app} in this project once first")  # fmt: skip
    _refuse_no_reflink(facts, "snapshot", sum(i.size for i in facts.items), copy)
    steps = _taking(facts, name, copy=copy, now=now, version=version, items=facts.items)
    return SnapshotPlan(app=facts.app, action="create", name=name, steps=steps)


def auto_name(now: float) -> str:
    return AUTO_PREFIX + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def plan_restore(facts: SnapshotFacts, name: str, *, copy: bool, discard_current: bool,
                 now: float, version: str) -> SnapshotPlan:  # fmt: skip
    check_name(name)
    taken = _find(facts, name)
    if taken.manifest is None or taken.problem is not None:
        raise SnapshotError(
            f"refusing to restore the damaged snapshot {name!r}: {taken.problem}",
            hint=f"{facts.app} snapshot delete {name} removes it; nothing changed",
        )
    _refuse_running(facts, f"restore {name!r}")
    if facts.mounted:
        raise SnapshotError(
            "refusing to restore while the Nix overlay is mounted over "
            + ", ".join(str(facts.state_dir / m) for m in facts.mounted),
            hint=f"{facts.app} gc removes an idle sidecar and its overlay; then retry",
        )
    size = sum(i.size for i in taken.manifest.items)
    _refuse_no_reflink(facts, f"restore {name!r}", size, copy)
    steps: list[Step] = []
    if not discard_current and facts.items:
        steps += _taking(facts, auto_name(now), copy=copy, now=now, version=version,
                         items=facts.items)  # fmt: skip
    source = facts.snapshots_dir / name
    for item in taken.manifest.items:
        steps += [Remove(path=facts.state_dir / f"{item.path}.restoring"),
                  Copy(source=source / item.path, dest=facts.state_dir / f"{item.path}.restoring",
                       full=copy, size=item.size)]  # fmt: skip
    kept = {i.path for i in taken.manifest.items}
    steps += [Remove(path=facts.state_dir / i.path) for i in facts.items]
    steps += [Rename(source=facts.state_dir / f"{p}.restoring", dest=facts.state_dir / p)
              for p in sorted(kept)]  # fmt: skip
    return SnapshotPlan(app=facts.app, action="restore", name=name, steps=tuple(steps))


def plan_delete(facts: SnapshotFacts, name: str) -> SnapshotPlan:
    check_name(name)
    _find(facts, name)
    return SnapshotPlan(app=facts.app, action="delete", name=name,
                        steps=(Remove(path=facts.snapshots_dir / name),))  # fmt: skip


def list_report(facts: SnapshotFacts) -> dict[str, object]:
    """``snapshot list --json`` (schema ``agentbox-snapshots/1``, loftd's too)."""
    rows = []
    for t in facts.snapshots:
        m = t.manifest
        rows.append({
            "name": t.name, "damaged": t.problem is not None, "problem": t.problem,
            "created": m.created if m else None, "agentbox": m.agentbox if m else None,
            "image": (m.image or None) if m else None,
            "items": [{"path": i.path, "kind": i.kind, "size": i.size} for i in m.items]
            if m else [],
        })  # fmt: skip
    return {"schema": "agentbox-snapshots/1", "state_dir": str(facts.state_dir),
            "snapshots": rows}  # fmt: skip


def render_list(report: dict[str, object], app: str) -> str:
    rows = report["snapshots"]
    assert isinstance(rows, list)
    if not rows:
        return f"no snapshots of this project ({app} snapshot create NAME takes one)"
    lines = []
    for r in rows:
        if r["damaged"]:
            lines.append(f"{r['name']}  DAMAGED: {r['problem']}")
            continue
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))
        size = human(sum(i["size"] for i in r["items"]))
        lines.append(f"{r['name']}  {when}  {len(r['items'])} item(s), {size}")
    return "\n".join(lines)
