"""The snapshot planner: names, refusals and steps from facts (pure), and facts read from a
real temp state dir with real locks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentbox_cli.container.sidecar import snapshot_hooks
from agentbox_state.lock import FileLock
from agentbox_state.testing import RecordingRunner
from agentbox_storage.snapshot import DIR, FILE, Item, Manifest
from loftd.snapshot import plan as planner
from loftd.snapshot.facts import Present, SnapshotFacts, Taken, snapshot_facts
from loftd.snapshot.plan import Copy, Remove, Rename, SnapshotError, WriteManifest

S = Path("/state/ws")
DISK = Present(path="microvm-nix.raw", kind=FILE, size=64 * 2**30, allocated=2**31)
UPPER = Present(path="nix/upper", kind=DIR, size=100, allocated=4096)
GOOD = Taken(name="good", problem=None, manifest=Manifest(
    created=1.0, agentbox="0.1.0", image="", items=(
        Item(path="microvm-nix.raw", kind=FILE, size=64 * 2**30, allocated=2**31),)))  # fmt: skip
BAD = Taken(name="bad", manifest=None, problem="the snapshot manifest ... is not JSON")


def facts(**kw: object) -> SnapshotFacts:
    base: dict[str, object] = {
        "app": "agentbox",
        "stop": "agentbox stop",
        "state_dir": S,
        "items": (DISK, UPPER),
        "snapshots": (GOOD, BAD),
        "running": (),
        "mounted": (),
        "reflink": True,
        "image": "sha256:i",
    }
    base.update(kw)
    return SnapshotFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "reason"), [
    ("", "a snapshot name is needed (it is empty)"),
    ("../x", "refusing the snapshot name '../x': it holds '/'"),
    ("/", "refusing the snapshot name '/': it holds '/'"),
    (".hidden", "refusing the snapshot name '.hidden': it starts with '.'"),
    ("-rf", "refusing the snapshot name '-rf': it starts with '-'"),
    ("a b", "refusing the snapshot name 'a b': it holds ' '"),
    ("x" * 65, "the snapshot name 'xxxxxxxxxxxxxxxxxxxx'... is 65 characters long (at most 64)"),
], ids=["empty", "dotdot", "slash", "dot", "dash", "space", "long"])  # fmt: skip
def test_hostile_names_are_refused(name: str, reason: str) -> None:
    with pytest.raises(SnapshotError) as info:
        planner.check_name(name)
    assert info.value.message == reason
    assert info.value.hint is not None
    assert info.value.hint.startswith("a snapshot name is 1-64 letters")
    with pytest.raises(SnapshotError):
        planner.plan_create(facts(), name, copy=False, now=0.0, version="v")


def test_create_copies_each_item_into_staging_then_renames() -> None:
    plan = planner.plan_create(facts(), "before-agent", copy=False, now=5.0, version="0.1.0")
    staging = S / "snapshots" / ".creating-before-agent"
    assert plan.steps[:3] == (
        Remove(path=staging),
        Copy(source=S / "microvm-nix.raw", dest=staging / "microvm-nix.raw", full=False,
             size=64 * 2**30),
        Copy(source=S / "nix/upper", dest=staging / "nix/upper", full=False, size=100),
    )  # fmt: skip
    manifest = plan.steps[3]
    assert isinstance(manifest, WriteManifest)
    assert manifest.manifest == Manifest(created=5.0, agentbox="0.1.0", image="sha256:i", items=(
        Item(path="microvm-nix.raw", kind=FILE, size=64 * 2**30, allocated=2**31),
        Item(path="nix/upper", kind=DIR, size=100, allocated=4096)))  # fmt: skip
    assert plan.steps[4] == Rename(source=staging, dest=S / "snapshots" / "before-agent")
    assert plan.describe()[:3] == [
        "agentbox snapshot create before-agent:",
        f"  remove {staging}",
        f"  copy-on-write {S}/microvm-nix.raw -> {staging}/microvm-nix.raw",
    ]


def test_create_refusals() -> None:
    with pytest.raises(SnapshotError, match=r"^refusing to snapshot it as 'x' while the project's "
                       r"state is in use: task t1 runs$"):  # fmt: skip
        planner.plan_create(facts(running=("task t1 runs",)), "x", copy=False, now=0, version="")
    with pytest.raises(SnapshotError, match=r"^a snapshot named 'good' exists already$"):
        planner.plan_create(facts(), "good", copy=False, now=0, version="")
    with pytest.raises(SnapshotError, match="has no state to snapshot yet"):
        planner.plan_create(facts(items=()), "x", copy=False, now=0, version="")
    with pytest.raises(SnapshotError) as info:
        planner.plan_create(facts(reflink=False), "x", copy=False, now=0, version="")
    assert info.value.message == (f"cannot snapshot copy-on-write: {S} is on a "
                                  "filesystem that cannot reflink (cp --reflink=always fails "
                                  "there)")  # fmt: skip
    assert info.value.hint is not None
    assert info.value.hint.startswith("--copy makes a full copy instead: 64.0 GiB written")
    plan = planner.plan_create(facts(reflink=False), "x", copy=True, now=0, version="")
    assert plan.describe()[2].startswith("  copy in full (64.0 GiB) ")


def test_restore_keeps_the_current_state_first_then_swaps_in_copies() -> None:
    plan = planner.plan_restore(facts(), "good", copy=False, discard_current=False, now=0.0,
                                version="v")  # fmt: skip
    auto = S / "snapshots" / "auto-before-restore-19700101T000000Z"
    assert plan.steps[4] == Rename(source=auto.with_name(f".creating-{auto.name}"), dest=auto)
    assert plan.steps[5:] == (
        Remove(path=S / "microvm-nix.raw.restoring"),
        Copy(source=S / "snapshots/good/microvm-nix.raw", dest=S / "microvm-nix.raw.restoring",
             full=False, size=64 * 2**30),
        Remove(path=S / "microvm-nix.raw"),
        Remove(path=S / "nix/upper"),  # not in the snapshot: the state is the snapshot's
        Rename(source=S / "microvm-nix.raw.restoring", dest=S / "microvm-nix.raw"),
    )  # fmt: skip
    discard = planner.plan_restore(facts(), "good", copy=False, discard_current=True, now=0.0,
                                   version="v")  # fmt: skip
    assert discard.steps == plan.steps[5:]


def test_restore_refusals() -> None:
    def restore(name: str, **kw: object) -> None:
        planner.plan_restore(facts(**kw), name, copy=False, discard_current=False, now=0,
                             version="")  # fmt: skip

    with pytest.raises(SnapshotError, match=r"^no snapshot named 'nope' in this project "
                       r"\(snapshots: good, bad\)$"):  # fmt: skip
        restore("nope")
    with pytest.raises(SnapshotError, match=r"^refusing to restore the damaged snapshot 'bad': "):
        restore("bad")
    with pytest.raises(SnapshotError, match=r"^refusing to restore 'good' while the project's"):
        restore("good", running=("disk microvm-nix.raw is attached",))
    with pytest.raises(SnapshotError, match=r"^refusing to restore while the Nix overlay is mount"):
        restore("good", mounted=("nix/merged",))
    with pytest.raises(SnapshotError, match=r"^cannot restore 'good' copy-on-write"):
        restore("good", reflink=False)


def test_delete_removes_only_the_named_snapshot() -> None:
    assert planner.plan_delete(facts(), "bad").steps == (Remove(path=S / "snapshots" / "bad"),)
    with pytest.raises(SnapshotError, match="no snapshot named 'x'"):
        planner.plan_delete(facts(), "x")


def test_facts_from_a_real_tree_and_real_locks(tmp_path: Path) -> None:
    state = tmp_path / "ws"
    (state / "nix" / "upper").mkdir(parents=True)
    (state / "nix" / "upper" / "f").write_bytes(b"123")
    (state / "cargo").mkdir()
    with open(state / "microvm-nix.raw", "wb") as f:
        f.truncate(2**30)
    (state / "snapshots" / "broken").mkdir(parents=True)
    found = snapshot_facts(state, RecordingRunner(), snapshot_hooks(), app="agentbox")
    assert [(i.path, i.kind, i.size) for i in found.items] == [
        ("microvm-nix.raw", FILE, 2**30),
        ("nix/upper", DIR, 3),
        ("cargo", DIR, 0),
    ]
    assert found.reflink is True  # the recording runner's cp "succeeds"
    (broken,) = found.snapshots
    assert broken.name == "broken"
    assert broken.problem is not None
    assert broken.problem.startswith("cannot read the snapshot manifest")
    assert found.running == ()
    assert (found.mounted, found.image) == ((), "")
    (state / "nix-sidecar.state").write_text('{"image_id": "sha256:i", "mounted": "sha256:i"}')
    found = snapshot_facts(state, RecordingRunner(), snapshot_hooks(), app="agentbox")
    assert (found.mounted, found.image) == (("nix/merged",), "sha256:i")  # a kept overlay
    lease = FileLock(state / "microvm-nix.raw.lease", what="disk")
    lease.acquire()
    try:
        (why,) = snapshot_facts(state, RecordingRunner(), snapshot_hooks(), app="agentbox").running
    finally:
        lease.release()
    assert why.startswith(f"disk microvm-nix.raw is attached (leased by pid {os.getpid()} since ")
