"""``agentbox snapshot`` through the real parser and dispatch on a temp HOME, with real cp: full
copies (--copy) where the temp dir cannot reflink, byte-identical restores, list --json against
its schema, and the refusals changing nothing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from agentbox_cli.main import VERBS
from agentbox_cli.schema import SPEC
from agentbox_state.cli.app import main
from agentbox_state.lock import FileLock
from agentbox_state.runner import SubprocessRunner
from agentbox_state.workspace import Workspace
from agentbox_storage.snapshot import can_reflink
from agentbox_testing import require
from agentbox_testing.schemas import load_schema, problems


def run(home: Path, *argv: str) -> tuple[int, str, str]:
    out: list[str] = []
    err: list[str] = []
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    code = main(SPEC, VERBS, list(argv), env, out=out.append, err=err.append)
    return code, "\n".join(out), "\n".join(err)


def sums(state: Path) -> dict[str, str]:
    found = {}
    for p in sorted(state.rglob("*")):
        rel = os.fspath(p.relative_to(state))
        if (
            p.is_file()
            and not rel.startswith(("snapshots", "locks"))
            and not rel.endswith(".lease")
        ):
            found[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "work" / "proj"
    where.mkdir(parents=True)
    monkeypatch.chdir(where)
    state = tmp_path / ".local/state/agentbox/workspaces" / Workspace.from_path(where).key
    (state / "nix" / "upper" / "store").mkdir(parents=True)
    (state / "nix" / "upper" / "store" / "pkg").write_bytes(b"v1")
    with open(state / "microvm-nix.raw", "wb") as f:
        f.truncate(64 * 2**20)
        f.write(b"disk v1")
    return state


def test_create_change_restore_is_byte_identical(tmp_path: Path, project: Path) -> None:
    before = sums(project)
    code, out, err = run(tmp_path, "snapshot", "create", "one", "--copy")
    assert (code, err) == (0, "")
    assert out == f"created snapshot one of {tmp_path}/work/proj"
    (project / "nix" / "upper" / "store" / "pkg").write_bytes(b"v2")
    (project / "nix" / "upper" / "new").write_bytes(b"agent wrote this")
    with open(project / "microvm-nix.raw", "r+b") as f:
        f.write(b"disk v2")
    changed = sums(project)
    assert run(tmp_path, "snapshot", "restore", "one", "--copy")[0] == 0
    assert sums(project) == before
    assert (project / "snapshots" / "one" / "microvm-nix.raw").exists()  # still usable
    code, out, _ = run(tmp_path, "snapshot", "list", "--json")
    report = json.loads(out)
    assert problems(report, load_schema("loftd.snapshot")) == []
    names = [s["name"] for s in report["snapshots"]]
    assert names[0].startswith("auto-before-restore-")
    assert names[1] == "one"
    assert all(not s["damaged"] for s in report["snapshots"])
    assert run(tmp_path, "snapshot", "restore", names[0], "--copy", "--discard-current")[0] == 0
    assert sums(project) == changed
    assert run(tmp_path, "snapshot", "delete", names[0]) == (
        0,
        f"deleted snapshot {names[0]} of {tmp_path}/work/proj",
        "",
    )
    assert not (project / "snapshots" / names[0]).exists()
    code, out, _ = run(tmp_path, "snapshot", "list")
    assert out.startswith("one  ")
    assert out.endswith("2 item(s), 64.0 MiB")


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path, project: Path) -> None:
    code, out, err = run(tmp_path, "--dry-run", "snapshot", "create", "x", "--copy")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "agentbox snapshot create x:"
    assert out.splitlines()[-1] == (f"  rename {project}/snapshots/.creating-x -> "
                                    f"{project}/snapshots/x")  # fmt: skip
    assert not (project / "snapshots").exists()


def test_refusals_change_nothing(tmp_path: Path, project: Path) -> None:
    assert run(tmp_path, "snapshot", "create", "good", "--copy")[0] == 0
    before = sums(project), sorted(os.listdir(project / "snapshots"))

    def refused(*argv: str) -> str:
        code, out, err = run(tmp_path, "snapshot", *argv)
        assert (code, out) == (1, "")
        assert (sums(project), sorted(os.listdir(project / "snapshots"))) == before
        return err

    assert refused("restore", "nope").startswith("agentbox: no snapshot named 'nope'")
    assert refused("create", "../x").startswith("agentbox: refusing the snapshot name '../x'")
    (project / "snapshots" / "good" / "manifest.json").write_text("{damaged")
    err = refused("restore", "good")
    assert err.startswith("agentbox: refusing to restore the damaged snapshot 'good': the "
                          "snapshot manifest ")  # fmt: skip
    assert err.endswith("\nhint: agentbox snapshot delete good removes it; nothing changed")
    lease = FileLock(project / "microvm-nix.raw.lease", what="disk")
    lease.acquire()
    try:
        err = refused("create", "busy", "--copy")
    finally:
        lease.release()
    assert err.startswith(
        "agentbox: refusing to snapshot it as 'busy' while the project's state is in use: "
        "disk microvm-nix.raw is attached (leased by pid "
    )
    code, _, err = run(tmp_path, "snapshot", "create")
    assert code == 2
    assert "'snapshot create' takes one NAME (got 0)" in err


def test_without_reflink_create_says_what_copy_would_cost(tmp_path: Path, project: Path) -> None:
    require(not can_reflink(tmp_path, SubprocessRunner(os.environ)),
            f"{tmp_path} can reflink: this test needs one that cannot (ext4, tmpfs)")  # fmt: skip
    code, out, err = run(tmp_path, "snapshot", "create", "x")
    assert (code, out) == (1, "")
    assert err == (f"agentbox: cannot snapshot copy-on-write: {project} is on a "
                   "filesystem that cannot reflink (cp --reflink=always fails there)\n"
                   "hint: --copy makes a full copy instead: 64.0 MiB written; or keep agentbox's "
                   "state on btrfs (or XFS with reflink)")  # fmt: skip
    assert not (project / "snapshots").exists()


def test_holding_keeps_runs_out_and_refuses_a_held_lock(project: Path) -> None:
    from agentbox_cli.container import sidecar
    from agentbox_state.errors import LockHeldError
    from agentbox_storage import disks
    from loftd.snapshot.execute import holding
    from loftd.snapshot.plan import SnapshotError

    with holding(project, sidecar.snapshot_hooks()):  # what a starting run meets meanwhile
        with pytest.raises(LockHeldError):
            disks.lease(project / "microvm-nix.raw").acquire()
        with pytest.raises(LockHeldError):
            sidecar.users_lock(project).acquire(shared=True)
    users = sidecar.users_lock(project)
    users.acquire(shared=True)  # a container task runs
    try:
        with (
            pytest.raises(SnapshotError, match=r"^refusing to change snapshots while the "),
            holding(project, sidecar.snapshot_hooks()),
        ):
            pytest.fail("not reached")
    finally:
        users.release()
    disks.lease(project / "microvm-nix.raw").acquire()  # all released: free again
