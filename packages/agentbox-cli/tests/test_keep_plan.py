"""``gc``/``forget``/``disks`` planned from a real temp state tree (real files, real flock(2)
locks held by this process as a run would hold them), then carried out through a recording
runner: whole plans, and the whole list of commands."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox_cli.keep.execute import execute_gc
from agentbox_cli.keep.facts import KeepFacts, keep_facts
from agentbox_cli.keep.plan import (
    ENTRY,
    LEASE,
    SIDECAR,
    STAGING,
    TASK,
    GcPlan,
    disks_report,
    plan_forget,
    plan_gc,
    render_disks,
)
from agentbox_state.lock import FileLock
from agentbox_state.testing import RecordingRunner
from agentbox_storage import taskroot
from agentbox_testing.schemas import load_schema, problems

A, B, C = "a" * 64, "b" * 64, "c" * 64
KEY = "my-project-0123456789ab"
GONE_PID = 2**22 + 12345  # above the default pid_max: no process has it


def stale(path: Path) -> None:
    """A lock file as a holder killed while holding it leaves it: its record, no lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": GONE_PID, "since": 1.0}))


def old(path: Path) -> None:
    hour_ago = time.time() - 3600
    os.utime(path, (hour_ago, hour_ago))


class Tree:
    def __init__(self, root: Path) -> None:
        self.base = root / "agentbox"
        self.images = self.base / "images"
        self.ws = self.base / "workspaces" / KEY
        self.tasks = self.ws / "tasks"
        self.held: list[FileLock] = []

    def facts(self, runner: RecordingRunner | None = None) -> KeepFacts:
        return keep_facts(self.base, self.images, self.base / "sccache", self.base / "workspaces",
                          runner or blkid(), current=KEY)  # fmt: skip

    def hold(self, lock: FileLock, *, shared: bool = False) -> None:
        lock.acquire(shared=shared)
        self.held.append(lock)


def blkid() -> RecordingRunner:
    runner = RecordingRunner()
    runner.script("blkid", "--probe", "--output", "value", "--match-tag", "TYPE",
                  stdout="btrfs\n")  # fmt: skip
    return runner


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    t = Tree(tmp_path)
    t.ws.mkdir(parents=True)
    with open(t.ws / "microvm-nix.raw", "wb") as f:
        f.truncate(64 * 2**30)  # sparse: 64 GiB apparent, nothing allocated
    (t.ws / "cargo").mkdir()
    (t.ws / "cargo" / "registry").write_bytes(b"x" * 10000)
    (t.ws / "nix" / "upper").mkdir(parents=True)
    for name in ("dead", "live", "kept", "young"):
        (t.tasks / name).mkdir(parents=True)
        taskroot.task_lock(t.tasks / name).path.touch()
    (t.tasks / "dead" / "rootfs-reflink").mkdir()
    (t.tasks / "kept" / taskroot.PRESERVED_NAME).write_text("kept\n")
    stale(t.ws / "locks" / "workspace.lock")
    (t.ws / "nix-sidecar.state").write_text(
        json.dumps({"name": f"agentbox-nix-{KEY}", "image": "localhost/agentbox:latest"})
    )
    for h in (A, B):
        (t.images / "sha256" / h / "rootfs").mkdir(parents=True)
        (t.images / "sha256" / h / "agentbox-compatible").write_text("agentbox image cache 1\n")
    (t.images / "refs").mkdir()
    (t.images / "refs" / "localhost%2Fagentbox%3Alatest").write_text(f"sha256:{A}\n")
    (t.images / "sha256" / f".{C}.partial-1-2" / "rootfs").mkdir(parents=True)
    stale(t.images / "sha256" / f".{C}.lock")
    for name in ("dead", "live", "kept"):
        old(t.tasks / name)
    yield t
    for lock in t.held:
        lock.release()


def rows(plan: GcPlan) -> list[tuple[str, str, str]]:
    return [(i.kind, os.fspath(i.path), i.reason) for i in plan.items]


def test_gc_plans_exactly_the_leftovers_and_never_a_disk(tree: Tree) -> None:
    tree.hold(taskroot.task_lock(tree.tasks / "live"), shared=True)  # a VM helper holds it
    tree.hold(FileLock(tree.ws / "microvm-nix.raw.lease", what="disk"))  # that run's disk
    plan = plan_gc(tree.facts())
    sidecar_reason = (f"idle Nix sidecar agentbox-nix-{KEY}: no task holds it; its container "
                      "and overlay mount go, its upper stays")  # fmt: skip
    assert rows(plan) == [
        (TASK, f"{tree.tasks}/dead", "left by a killed run: its task lock is free"),
        (SIDECAR, f"{tree.ws}/nix/merged", sidecar_reason),
        (LEASE, f"{tree.ws}/locks/workspace.lock",
         f"its lock is free but records pid {GONE_PID}, a holder killed while holding it"),
        (STAGING, f"{tree.images}/sha256/.{C}.partial-1-2",
         "staging of a killed ingest: its digest lock is free"),
        (LEASE, f"{tree.images}/sha256/.{C}.lock",
         f"its lock is free but records pid {GONE_PID}, a holder killed while holding it"),
    ]  # fmt: skip
    assert plan.kept == (
        f"task root {tree.tasks}/kept (kept by --preserve-debug; agentbox forget removes it)",
        f"task root {tree.tasks}/young (changed in the last minute: its run may be starting)",
        f"image-entry {tree.images}/sha256/{B} (no tag names it, but task live runs and may "
        "use it)",
    )
    lines = plan.describe(dry_run=True)
    assert lines[0].startswith(f"{TASK} {tree.tasks}/dead: ")
    assert lines[-1].startswith("5 item(s); would free ")
    assert plan.total == sum(i.size for i in plan.items) > 0


def test_an_untagged_entry_goes_once_no_task_runs(tree: Tree) -> None:
    plan = plan_gc(tree.facts())
    assert (ENTRY, f"{tree.images}/sha256/{B}", "no tag names it now and no task runs") in \
        rows(plan)  # fmt: skip
    assert all(f"sha256/{A}" not in path for _, path, _ in rows(plan))  # the tag's entry stays


def test_a_held_sidecar_lock_keeps_the_sidecar(tree: Tree) -> None:
    tree.hold(FileLock(tree.ws / "locks" / "sidecar-users.lock", what="users"), shared=True)
    assert SIDECAR not in [kind for kind, _, _ in rows(plan_gc(tree.facts()))]


def test_a_held_setup_lock_alone_still_plans_the_sidecar(tree: Tree) -> None:
    # a reaper or a starting task holds it for moments; removing waits for it, then checks the
    # users lock (a run that lost this race left a retired sidecar's overlay mounted)
    setup = FileLock(tree.ws / "locks" / "sidecar.lock", what="setup")
    tree.hold(setup)
    probe = setup.probe()
    assert probe is not None
    holder = probe.holder
    [reason] = [why for kind, _, why in rows(plan_gc(tree.facts())) if kind == SIDECAR]
    assert reason == (f"idle Nix sidecar agentbox-nix-{KEY}: no task holds it; its container "
                      f"and overlay mount go, its upper stays (its setup lock is held by "
                      f"{holder}: gc waits for it)")  # fmt: skip


def test_gc_execute_removes_through_the_lower_packages(tree: Tree) -> None:
    (tree.ws / "nix-sidecar.state").unlink()  # the sidecar's removal asks Podman: integration
    tree.hold(taskroot.task_lock(tree.tasks / "live"), shared=True)
    plan = plan_gc(tree.facts())
    runner = RecordingRunner()
    warned: list[str] = []
    done = execute_gc(plan, runner, tree.images, userns=("buildah", "unshare"), rootless=True,
                      debug=False, warn=warned.append)  # fmt: skip
    rm = ["buildah", "unshare", "sh", "-c", 'chmod -R u+rwX -- "$1" 2>/dev/null; rm -rf -- "$1"',
          "remove-tree"]  # fmt: skip
    assert runner.argvs == [
        [*rm, f"{tree.tasks}/dead/rootfs-reflink"],
        [*rm, f"{tree.tasks}/dead"],
        [*rm, f"{tree.images}/sha256/.{C}.partial-1-2"],
    ]
    assert warned == []
    assert [i.kind for i in done] == [TASK, STAGING, LEASE, LEASE]
    assert (tree.ws / "locks" / "workspace.lock").read_text() == ""  # the stale record is gone
    assert plan_gc(tree.facts()).items[0].kind == TASK  # recorded, not run


def test_forget_plan_names_what_runs(tree: Tree) -> None:
    tree.hold(taskroot.task_lock(tree.tasks / "live"), shared=True)
    tree.hold(FileLock(tree.ws / "microvm-nix.raw.lease", what="disk"))
    tree.hold(FileLock(tree.ws / "locks" / "sidecar-users.lock", what="users"), shared=True)
    (project,) = tree.facts().projects
    plan = plan_forget(project, "/work/my-project")
    shared = "another process (a shared holder, or one that has not recorded its pid yet)"
    since = plan.running[1].split(" since ")[-1]
    assert plan.running == (  # in the order of the lock files
        f"a container task of this project runs (it holds locks/sidecar-users.lock: {shared})",
        f"disk microvm-nix.raw is attached (leased by pid {os.getpid()} since {since}",
        f"task live runs (its lock is held by {shared})",
    )
    lines = plan.describe()
    assert lines[0].startswith(f"disk {tree.ws}/microvm-nix.raw: ")
    assert f"sidecar agentbox-nix-{KEY}: its container and overlay mount" in lines
    assert lines[-4].startswith(f"the state dir {tree.ws} with all of the above: ")
    assert lines[-3:] == [f"in use: {why}" for why in plan.running]


def test_disks_report_validates_and_shows_the_sparse_disk(tree: Tree) -> None:
    runner = blkid()
    runner.script("blkid", "--probe", "--output", "value", "--match-tag", "LABEL",
                  stdout="AGENTBOX_NIX\n")  # fmt: skip
    tree.hold(FileLock(tree.ws / "microvm-nix.raw.lease", what="disk"))
    report = json.loads(json.dumps(disks_report(tree.facts(runner))))
    assert problems(report, load_schema("agentbox_cli.keep")) == []
    (project,) = report["projects"]
    disk = project["items"][0]
    assert (disk["kind"], disk["label"], disk["valid"]) == ("disk", "AGENTBOX_NIX", True)
    assert disk["apparent"] == 64 * 2**30 > disk["allocated"]
    assert disk["leased_by"].startswith(f"pid {os.getpid()} since ")
    assert [(r["kind"], Path(r["path"]).name) for r in project["items"][1:]] == [
        ("overlay-upper", "upper"), ("cache", "cargo"), ("task-root", "dead"),
        ("task-root", "kept"), ("task-root", "live"), ("task-root", "young"),
    ]  # fmt: skip
    assert report["image_cache"]["entries"] == 2
    text = render_disks(report)
    assert text.splitlines()[0].startswith(f"{KEY} (this directory's project): {tree.ws}, ")
    assert f"  disk {tree.ws}/microvm-nix.raw: 64.0 GiB apparent, " in text
