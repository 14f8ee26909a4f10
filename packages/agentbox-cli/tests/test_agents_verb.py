"""``agentbox agents`` through the real parser and dispatch, on a temp HOME and a real git
repository: the listing (validated against schema.json), ``remove``'s refusals (unknown agent,
uncommitted changes without --force, a held lease) that change nothing, and the removal, which
keeps the branch (git-worktree(1) ``remove``: refused for a dirty worktree without --force)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agentbox_cli.agents.setup import prepare
from agentbox_cli.agents.worktree import Agent, agent_of
from agentbox_cli.main import VERBS
from agentbox_cli.schema import SPEC
from agentbox_state.cli.app import Context, main
from agentbox_state.lock import FileLock
from agentbox_state.runner import SubprocessRunner
from agentbox_state.workspace import Workspace
from agentbox_testing import require
from agentbox_testing.schemas import load_schema, problems


def run(home: Path, *argv: str) -> tuple[int, str, str]:
    out: list[str] = []
    err: list[str] = []
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    code = main(SPEC, VERBS, list(argv), env, out=out.append, err=err.append)
    return code, "\n".join(out), "\n".join(err)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    require(shutil.which("git") is not None, "git is missing (apt-get install git)")
    project = tmp_path / "work" / "proj"
    project.mkdir(parents=True)
    git(project, "init", "--quiet", "--initial-branch=main")
    git(project, "config", "user.email", "t@example.org")
    git(project, "config", "user.name", "T")
    (project / "a").write_text("a\n")
    git(project, "add", "a")
    git(project, "commit", "--quiet", "-m", "first")
    monkeypatch.chdir(project)
    return project


def make(tmp_path: Path, repo: Path, name: str) -> Agent:
    ws = Workspace.from_path(repo)
    agent = agent_of(Path(ws.path), ws.key, tmp_path / ".local/state/agentbox/workspaces", name)
    prepare(agent, SubprocessRunner({"PATH": "/usr/bin:/bin"}), err=print)
    return agent


def test_no_agents_yet(tmp_path: Path, repo: Path) -> None:
    assert run(tmp_path, "agents") == (
        0, f"no agents of {repo} (start one: agentbox --agent NAME container)", "",
    )  # fmt: skip


def test_listing_validates_and_names_each_agent(tmp_path: Path, repo: Path) -> None:
    a1, a2 = make(tmp_path, repo, "a1"), make(tmp_path, repo, "a2")
    code, out, err = run(tmp_path, "agents", "--json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert problems(doc, load_schema("agentbox_cli.agents")) == []
    assert [(a["name"], a["branch"], a["worktree"], a["state_dir"], a["running"])
            for a in doc["agents"]] == [
        ("a1", "agentbox/a1", str(a1.worktree), str(a1.state_dir), False),
        ("a2", "agentbox/a2", str(a2.worktree), str(a2.state_dir), False),
    ]  # fmt: skip
    assert all(a["allocated_bytes"] > 0 for a in doc["agents"])
    lease = FileLock(a2.state_dir / "locks" / "sidecar-users.lock", what="test")
    lease.acquire(shared=True)  # as a running container task holds it
    try:
        text = run(tmp_path, "agents")[1].splitlines()
    finally:
        lease.release()
    rows = [line.split() for line in text]
    assert rows[0] == ["NAME", "BRANCH", "STATE", "SHARED", "RUNNING", "WORKTREE"]
    assert [(r[0], r[1], r[-2], r[-1]) for r in rows[1:]] == [
        ("a1", "agentbox/a1", "no", str(a1.worktree)),
        ("a2", "agentbox/a2", "yes", str(a2.worktree)),
    ]  # fmt: skip


def test_remove_refuses_unknown_dirty_and_running_then_removes(tmp_path: Path,
                                                              repo: Path) -> None:  # fmt: skip
    assert run(tmp_path, "agents", "remove", "nope")[0] == 1
    assert run(tmp_path, "agents", "remove", "nope")[2] == (
        f"agentbox: {repo} has no agent nope\nhint: 'agentbox agents' lists them"
    )
    agent = make(tmp_path, repo, "a1")
    (agent.worktree / "new").write_text("x\n")
    code, _, err = run(tmp_path, "agents", "remove", "a1")
    assert code == 1
    assert err == (f"agentbox: agent a1's worktree {agent.worktree} has 1 uncommitted change(s)"
                   "\nhint: commit them on agentbox/a1 first, or add --force to lose them; "
                   "nothing was removed")  # fmt: skip
    assert (agent.worktree / "new").exists()
    git(agent.worktree, "add", "new")
    git(agent.worktree, "commit", "--quiet", "-m", "by a1")
    code, out, err = run(tmp_path, "agents", "remove", "a1")
    assert (code, err) == (0, "")
    assert out.startswith(f"removed agent a1: {agent.state_dir} (")
    assert out.endswith("); branch agentbox/a1 kept")
    assert not agent.state_dir.exists()
    assert git(repo, "log", "--format=%s", "agentbox/a1") == "by a1\nfirst\n"
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(repo, "status", "--porcelain") == ""


def test_remove_force_drops_uncommitted_changes(tmp_path: Path, repo: Path) -> None:
    agent = make(tmp_path, repo, "a1")
    (agent.worktree / "a").write_text("changed\n")
    code, out, err = run(tmp_path, "agents", "remove", "a1", "--force")
    assert (code, err) == (0, "")
    assert out.startswith(f"removed agent a1: {agent.state_dir} (")
    assert out.endswith("); branch agentbox/a1 kept")
    assert not agent.state_dir.exists()


def test_remove_is_refused_while_a_lease_is_held(tmp_path: Path, repo: Path) -> None:
    agent = make(tmp_path, repo, "a1")
    lease = FileLock(agent.state_dir / "microvm-nix.raw.lease", what="disk")
    lease.acquire()
    try:
        code, _, err = run(tmp_path, "agents", "remove", "a1", "--force")
    finally:
        lease.release()
    assert code == 1
    assert err.startswith("agentbox: refusing to remove agent a1 while it runs: ")
    assert (agent.worktree / ".git").is_file()


def test_bad_usage(tmp_path: Path, repo: Path) -> None:
    assert run(tmp_path, "agents", "remove")[0] == 2
    assert run(tmp_path, "agents", "remove", "../x")[2].startswith(
        "agentbox: --agent '../x' is not an agent name"
    )
    assert run(tmp_path, "--agent", "a1", "agents")[2] == (
        "agentbox: 'agents' takes no --agent\n"
        "hint: --agent goes with libkrun or container or microvm; drop it here"
    )


def _entering(home: Path, name: str, out: list[str], err: list[str]) -> threading.Thread:
    """A start of agent ``name`` through the real parser, up to what container mode does first
    (``agents.enter.enter``), in a thread of its own."""
    from agentbox_cli.agents.enter import enter
    from agentbox_state.cli.app import Verb

    def run_verb(ctx: Context) -> int:
        workspace, _ = enter(ctx, ctx.mounted_workspace(), ctx.runner())
        ctx.out(workspace.path)
        return 0

    probe = Verb("probe", "enter an agent", run_verb, agent=True)
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(
            main(SPEC, [probe], ["--agent", name, "probe"], env, out=out.append, err=err.append)
        )
    )
    thread.start()
    return thread


def test_a_second_start_of_an_agent_waits_for_the_first_ones_setup(
    tmp_path: Path, repo: Path
) -> None:
    """While one start of agent a1 makes its state and worktree (it holds the agent's lock),
    another waits, says for whom, and then uses what the first made."""
    ws = Workspace.from_path(repo)
    state = tmp_path / ".local/state/agentbox/workspaces" / ws.key
    setup = FileLock(state.parent / f".{ws.key}-agent-a1.lock", what="test")
    setup.acquire()  # as a first start does while it forks and adds the worktree
    out: list[str] = []
    err: list[str] = []
    try:
        thread = _entering(tmp_path, "a1", out, err)
        deadline = time.monotonic() + 10
        while not err and time.monotonic() < deadline:
            time.sleep(0.02)
        assert err == [f"waiting for agent a1 of {repo}: held by pid {os.getpid()} since "
                       + err[0].rpartition(" since ")[2]]  # fmt: skip
        assert not (state.parent / f"{ws.key}-agent-a1").exists()  # nothing made meanwhile
    finally:
        setup.release()
    thread.join(30)
    worktree = state.parent / f"{ws.key}-agent-a1" / "worktree"
    assert out == [str(worktree)]
    # three first starts of a2 at once: one makes its worktree, the others find it
    outs: list[list[str]] = [[], [], []]
    errs: list[list[str]] = [[], [], []]
    for thread in [_entering(tmp_path, "a2", o, e) for o, e in zip(outs, errs, strict=True)]:
        thread.join(30)
    other = state.parent / f"{ws.key}-agent-a2" / "worktree"
    assert outs == [[str(other)]] * 3, errs
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 3
