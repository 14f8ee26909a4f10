"""The verbs through the real parser and dispatch, on a temp HOME: ``forget`` without --force
changes nothing, ``forget --force`` is refused while a disk is leased and then removes the
project's state, ``disks --json`` validates, ``gc --dry-run`` on a clean state finds nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agentbox_cli.main import VERBS
from agentbox_cli.schema import SPEC
from agentbox_state.cli.app import main
from agentbox_state.lock import FileLock
from agentbox_state.workspace import Workspace
from agentbox_testing.schemas import load_schema, problems


def run(home: Path, *argv: str) -> tuple[int, str, str]:
    out: list[str] = []
    err: list[str] = []
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    code = main(SPEC, VERBS, list(argv), env, out=out.append, err=err.append)
    return code, "\n".join(out), "\n".join(err)


def listing(root: Path) -> list[tuple[str, int, str]]:
    return sorted((os.fspath(p.relative_to(root)), p.lstat().st_size,
                   p.read_text() if p.is_file() and p.suffix != ".raw" else "")
                  for p in root.rglob("*"))  # fmt: skip


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "work" / "my-project"
    where.mkdir(parents=True)
    monkeypatch.chdir(where)
    state = tmp_path / ".local/state/agentbox/workspaces" / Workspace.from_path(where).key
    (state / "cargo").mkdir(parents=True)
    (state / "cargo" / "x").write_text("cached")
    with open(state / "microvm-nix.raw", "wb") as f:
        f.truncate(2**30)
    return state


def test_forget_without_force_changes_nothing(tmp_path: Path, project: Path) -> None:
    before = listing(tmp_path)
    code, out, err = run(tmp_path, "forget")
    assert code == 1
    assert out.splitlines()[0].startswith(f"disk {project}/microvm-nix.raw: ")
    assert err.endswith("\nhint: add --force if that is what you want")
    assert listing(tmp_path) == before


def test_forget_force_is_refused_while_a_disk_is_leased(tmp_path: Path, project: Path) -> None:
    lease = FileLock(project / "microvm-nix.raw.lease", what="disk")
    lease.acquire()
    try:
        before = listing(tmp_path)
        code, _, err = run(tmp_path, "forget", "--force")
        assert listing(tmp_path) == before
    finally:
        lease.release()
    assert code == 1
    assert err.startswith(f"agentbox: refusing to forget {project.parents[4]}/work/my-project "
                          "while it is in use: disk microvm-nix.raw is attached (leased by pid "
                          f"{os.getpid()} since ")  # fmt: skip
    code, out, err = run(tmp_path, "forget", "--force")
    assert (code, err) == (0, "")
    assert out.startswith(f"forgot {project.parents[4]}/work/my-project: removed {project} (")
    assert not project.exists()
    assert run(tmp_path, "forget")[:2] == (
        0,
        f"agentbox keeps no state for {project.parents[4]}/work/my-project: nothing to forget",
    )


def test_disks_json_validates_and_gc_finds_nothing(tmp_path: Path, project: Path) -> None:
    code, out, err = run(tmp_path, "disks", "--json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert problems(report, load_schema("agentbox_cli.keep")) == []
    (mine,) = report["projects"]
    assert mine["current"] is True
    disk = mine["items"][0]
    assert (disk["path"], disk["apparent"]) == (f"{project}/microvm-nix.raw", 2**30)
    assert disk["allocated"] < disk["apparent"]  # sparse
    assert disk["valid"] is False  # no btrfs in it: reported, never an error
    assert run(tmp_path, "gc", "--dry-run") == (0, "nothing to remove", "")
    assert run(tmp_path, "gc") == (0, "nothing to remove", "")
