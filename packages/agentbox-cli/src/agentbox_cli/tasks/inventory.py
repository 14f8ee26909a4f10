"""Which agentbox tasks run now, for ``ps``, ``stop`` and ``kill``.

Container tasks (container and libkrun mode) are Podman containers labelled ``agentbox.role``
``task`` or ``libkrun-task``: ``podman ps --format json`` lists them (podman-ps(1)) and
``podman container inspect`` gives the project (the source of the ``/workspace`` mount) and
libkrun mode's disks (crun's ``krun.disk.N.path`` annotations). VM tasks (microvm, loftd) are
``<base>/workspaces/*/tasks/<name>/`` whose ``.task.lock`` is held: the command line and the VM
helper each hold it (flock, shared), so its holders are read from ``/proc/locks`` (proc(5)) and
confirmed by the open file in ``/proc/PID/fd``; a task whose holders are all gone is not running
(what it left is garbage, not a task). Nothing here takes a lock or changes a file.

The parsing is pure (``parse_ps``, ``parse_inspect``, ``parse_locks``, ``vm_task``); the
gathering (``container_tasks``, ``vm_tasks``) runs podman through the runner and reads /proc.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentbox_podman.podman import EGRESS_LOG_LABEL, ROLE_LABEL, SIDECAR_LABEL, podman_argv
from agentbox_state.errors import AgentboxError, CommandError
from agentbox_state.runner import Runner

# agentbox.role -> mode (the sidecar, resize guests and probes are no tasks)
ROLES = {"task": "container", "libkrun-task": "libkrun"}
LOCK_NAME = ".task.lock"  # agentbox_storage.taskroot.LOCK_NAME (not imported: storage is heavy)
CONF_NAME = "launch.conf"
WORKSPACE = "/workspace"
# how the VM helper is started (agentbox_krun.enter; ``internal krun-enter`` and loftd's
# ``libkrun-enter`` are the command lines' own doors to it)
HELPER_MARKS = ("agentbox_krun.enter", "agentbox_krun.helper", "krun-enter")
NOT_FOUND = 127


class TaskError(AgentboxError):
    """A task could not be listed, found or signalled."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """One running task: ``pid`` is what ``stop``/``kill`` signal for a VM task (its helper,
    else its command line), ``container_id`` what they hand to Podman for a container task."""

    name: str
    mode: str  # container, libkrun, microvm, loftd
    project: str | None
    image: str | None
    started: float | None  # seconds since the epoch
    pid: int | None
    container_id: str | None
    holds: tuple[tuple[str, str], ...] = ()  # (kind, what): ("sidecar", name), ("disk", path)

    def document(self) -> dict[str, object]:
        return {
            "name": self.name, "mode": self.mode, "project": self.project, "image": self.image,
            "started": self.started, "pid": self.pid, "container_id": self.container_id,
            "holds": [{"kind": kind, "what": what} for kind, what in self.holds],
        }  # fmt: skip


# ---- container tasks ---------------------------------------------------------------------


def ps_argv(*, debug: bool = False) -> list[str]:
    """Every running container carrying the role label, whatever its value (podman-ps(1):
    ``--filter label=KEY`` matches a key of any value; ``--format json`` is the whole record)."""
    return [*podman_argv(debug=debug), "ps", "--format", "json", "--filter", f"label={ROLE_LABEL}"]


def inspect_argv(ids: Sequence[str], *, debug: bool = False) -> list[str]:
    """podman-container-inspect(1): a JSON array, one object per container (its Mounts with
    Source and Destination, Config.Annotations)."""
    return [*podman_argv(debug=debug), "container", "inspect", *ids]


def _json(text: str, what: str) -> object:
    try:
        return json.loads(text or "[]")
    except ValueError as err:
        raise TaskError(
            f"{what} printed something that is not JSON: {text.strip()[:80]!r}",
            hint="run it by hand to see what Podman says ('podman ps --format json')",
        ) from err


def _records(value: object) -> list[Mapping[str, object]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


@dataclass(frozen=True, slots=True, kw_only=True)
class Container:
    id: str
    name: str
    mode: str
    image: str | None
    pid: int | None
    started: float | None
    sidecar: str | None
    egress_log: str | None = None  # under an allow-list: where its denials go


def parse_ps(text: str) -> list[Container]:
    """The agentbox tasks in ``podman ps --format json``'s output (fields as podman-ps(1) names
    them: Id, Names, Image, Labels, Pid, StartedAt in seconds since the epoch, State)."""
    found = []
    for record in _records(_json(text, "podman ps")):
        labels = record.get("Labels")
        labels = labels if isinstance(labels, dict) else {}
        mode = ROLES.get(str(labels.get(ROLE_LABEL)))
        names = record.get("Names")
        ident = record.get("Id")
        if mode is None or not isinstance(ident, str) or record.get("State") != "running":
            continue
        name = names[0] if isinstance(names, list) and names else ident[:12]
        pid, started, image = record.get("Pid"), record.get("StartedAt"), record.get("Image")
        sidecar, log = labels.get(SIDECAR_LABEL), labels.get(EGRESS_LOG_LABEL)
        found.append(Container(
            id=ident, name=str(name), mode=mode, image=image if isinstance(image, str) else None,
            pid=pid if isinstance(pid, int) and pid > 0 else None,
            started=float(started) if isinstance(started, int | float) and started > 0 else None,
            sidecar=sidecar if isinstance(sidecar, str) else None,
            egress_log=log if isinstance(log, str) else None,
        ))  # fmt: skip
    return found


def parse_inspect(text: str) -> dict[str, tuple[str | None, tuple[str, ...]]]:
    """Container id -> (the source of its /workspace mount, the paths of its krun disks in
    index order), from ``podman container inspect``'s JSON."""
    found: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    for record in _records(_json(text, "podman container inspect")):
        ident = record.get("Id")
        if not isinstance(ident, str):
            continue
        project = next((str(m.get("Source")) for m in _records(record.get("Mounts"))
                        if m.get("Destination") == WORKSPACE), None)  # fmt: skip
        config = record.get("Config")
        notes = config.get("Annotations") if isinstance(config, dict) else None
        notes = notes if isinstance(notes, dict) else {}
        disks = sorted(
            (int(key.split(".")[2]), str(value)) for key, value in notes.items()
            if key.startswith("krun.disk.") and key.endswith(".path")
            and key.split(".")[2].isdigit()
        )  # fmt: skip
        found[ident] = (project, tuple(path for _, path in disks))
    return found


def container_task(found: Container, details: tuple[str | None, tuple[str, ...]]) -> Task:
    project, disks = details
    holds = (
        ((("sidecar", found.sidecar),) if found.sidecar else ())
        + tuple(("disk", path) for path in disks)
        + ((("egress-log", found.egress_log),) if found.egress_log else ())
    )
    return Task(name=found.name, mode=found.mode, project=project, image=found.image,
                started=found.started, pid=found.pid, container_id=found.id,
                holds=holds)  # fmt: skip


def container_tasks(runner: Runner, *, debug: bool = False) -> list[Task]:
    """The running container tasks; none when Podman is not installed."""
    try:
        listed = runner.run(ps_argv(debug=debug))
    except CommandError as err:
        if err.returncode in (None, NOT_FOUND):
            return []  # no podman here: no container tasks either
        raise TaskError(f"podman ps failed: {err.message}", hint=err.hint or
                        "run 'agentbox doctor' to see what Podman needs") from err  # fmt: skip
    containers = parse_ps(listed.stdout)
    if not containers:
        return []
    # a container that ended meanwhile makes inspect exit non-zero; the others still print
    shown = runner.run(inspect_argv([c.id for c in containers], debug=debug), check=False)
    try:
        details = parse_inspect(shown.stdout)
    except TaskError:
        details = {}
    return [container_task(c, details.get(c.id, (None, ()))) for c in containers]


# ---- VM tasks ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockEntry:
    """One line of /proc/locks: ``N: FLOCK  ADVISORY  READ 5886 fe:00:1786188 0 EOF``."""

    kind: str  # FLOCK, POSIX, OFDLCK, LEASE, ...
    access: str  # READ (shared) or WRITE (exclusive)
    pid: int
    inode: int


def parse_locks(text: str) -> list[LockEntry]:
    """The locks held (not the ``->`` waiters) in ``/proc/locks`` (proc(5): ordinal, type,
    mode, access, pid, MAJOR:MINOR:INODE of the file's filesystem, start, end)."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        ident = fields[5].split(":")
        if len(ident) != 3 or not ident[2].isdigit() or not fields[4].lstrip("-").isdigit():
            continue
        found.append(LockEntry(fields[1], fields[3], int(fields[4]), int(ident[2])))
    return found


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    cmdline: tuple[str, ...]

    @property
    def is_helper(self) -> bool:
        return any(mark in word for word in self.cmdline for mark in HELPER_MARKS)


def conf_facts(doc: object) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """(project, holds) from a launch.conf document: the workspace (shared over virtiofs, or
    grafted at /workspace), its disks and the /nix overlay whose lease it holds (loftd)."""
    if not isinstance(doc, dict):
        return None, ()
    project = doc.get("workspace_source")
    if not isinstance(project, str):
        project = next((str(m.get("source")) for m in _records(doc.get("mounts"))
                        if m.get("target") == WORKSPACE), None)  # fmt: skip
    holds = [("disk", str(d.get("path"))) for d in _records(doc.get("disks")) if d.get("path")]
    nix = doc.get("nix_overlay")
    if isinstance(nix, dict) and isinstance(nix.get("lease"), str):
        holds.append(("nix-overlay", os.path.dirname(str(nix["lease"]))))
    return project, tuple(holds)


def vm_task(name: str, mode: str, holders: Sequence[Holder], doc: object,
            started: float | None) -> Task:  # fmt: skip
    """The task of a held task dir: its helper's pid (the VM), else its command line's (still
    setting up), with what its launch.conf says (nothing yet, before it is written)."""
    chosen = next((h for h in holders if h.is_helper), holders[0] if holders else None)
    project, holds = conf_facts(doc)
    image = doc.get("image") if isinstance(doc, dict) else None
    return Task(name=name, mode=mode, project=project,
                image=image if isinstance(image, str) else None, started=started,
                pid=chosen.pid if chosen else None, container_id=None,
                holds=holds)  # fmt: skip


def _holds_open(pid: int, dev_ino: tuple[int, int], proc: Path) -> bool:
    """Whether process ``pid`` has the file ``dev_ino`` open (its /proc/PID/fd links)."""
    fds = proc / str(pid) / "fd"
    try:
        names = os.listdir(fds)
    except OSError:
        return False
    for name in names:
        try:
            st = os.stat(fds / name)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == dev_ino:
            return True
    return False


def _cmdline(pid: int, proc: Path) -> tuple[str, ...]:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(os.fsdecode(word) for word in raw.split(b"\0") if word)


def _read_conf(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None  # not written yet (or being replaced): the task shows without its facts


def _task_dirs(base: Path) -> list[Path]:
    try:
        workspaces = sorted(os.scandir(base / "workspaces"), key=lambda e: e.name)
    except OSError:
        return []
    found = []
    for ws in workspaces:
        try:
            entries = sorted(os.scandir(Path(ws.path) / "tasks"), key=lambda e: e.name)
        except OSError:
            continue
        found += [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    return found


def vm_tasks(bases: Sequence[tuple[str, Path]], proc: Path = Path("/proc")) -> list[Task]:
    """The task dirs under each (mode, state base) whose lock some live process holds."""
    try:
        locks = parse_locks((proc / "locks").read_text(encoding="ascii", errors="replace"))
    except OSError:
        return []
    by_inode: dict[int, set[int]] = {}
    for entry in locks:
        if entry.kind == "FLOCK":
            by_inode.setdefault(entry.inode, set()).add(entry.pid)
    found = []
    for mode, base in bases:
        for task_dir in _task_dirs(base):
            try:
                st = os.stat(task_dir / LOCK_NAME)
            except OSError:
                continue
            pids = sorted(p for p in by_inode.get(st.st_ino, ()) if p > 0
                          and _holds_open(p, (st.st_dev, st.st_ino), proc))  # fmt: skip
            if not pids:
                continue  # abandoned: its holders are gone
            holders = [Holder(pid, _cmdline(pid, proc)) for pid in pids]
            doc = _read_conf(task_dir / CONF_NAME)
            found.append(vm_task(task_dir.name, mode, holders, doc, st.st_mtime))
    return found


# ---- the inventory, a task by name, and how to signal it ---------------------------------


def inventory(runner: Runner, bases: Sequence[tuple[str, Path]], *, debug: bool = False,
              proc: Path = Path("/proc")) -> list[Task]:  # fmt: skip
    """Every running task of this user, oldest first."""
    tasks = container_tasks(runner, debug=debug) + vm_tasks(bases, proc)
    return sorted(tasks, key=lambda t: (t.started is None, t.started or 0.0, t.name))


def find(tasks: Sequence[Task], name: str) -> Task:
    for task in tasks:
        if name in (task.name, task.container_id):
            return task
    raise TaskError(
        f"no running agentbox task is called {name!r}; nothing was signalled",
        hint="'agentbox ps' lists the running tasks by name",
    )


@dataclass(frozen=True, slots=True)
class Signal:
    """How to stop a task: a podman command line (container tasks), else a signal to a pid."""

    argv: tuple[str, ...] = ()
    pid: int | None = None
    signal: int = signal.SIGTERM

    def describe(self) -> str:
        if self.argv:
            return " ".join(self.argv)
        return f"kill -{signal.Signals(self.signal).name.removeprefix('SIG')} {self.pid}"


def plan_signal(task: Task, *, force: bool, debug: bool = False) -> Signal:
    """``stop`` (podman-stop(1): the stop signal, SIGTERM, then SIGKILL after its timeout, 10
    s; SIGTERM to the VM helper) or ``kill`` (podman-kill(1) with SIGKILL; SIGKILL to the
    helper). The task's own command line then sees its VM or container end and cleans up."""
    if task.container_id is not None:
        verb = ["kill", "--signal", "KILL"] if force else ["stop"]
        return Signal(argv=(*podman_argv(debug=debug), *verb, task.container_id))
    if task.pid is None:
        raise TaskError(f"task {task.name} has no process to signal yet",
                        hint="try again in a moment ('agentbox ps' shows it)")  # fmt: skip
    return Signal(pid=task.pid, signal=signal.SIGKILL if force else signal.SIGTERM)
