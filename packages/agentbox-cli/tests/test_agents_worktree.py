"""The agent's names and git command lines (pure), and the worktree made by real git.

git-worktree(1): ``git worktree add [-b <new-branch>] <path> [<commit-ish>]``; a linked
worktree's ``.git`` is a file ``gitdir: <common>/worktrees/<id>``, that admin dir named after the
worktree's basename, and ``commondir`` in it points back at the repository's git dir.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agentbox_cli.agents.setup import prepare
from agentbox_cli.agents.worktree import (
    GitMounts,
    add_argv,
    admin_dir,
    agent_of,
    check_name,
    probe_argv,
    remove_argv,
    status_argv,
)
from agentbox_podman.podman import Mount
from agentbox_state.errors import UsageError
from agentbox_state.runner import SubprocessRunner
from agentbox_testing import require

AGENT = agent_of(Path("/src/app"), "app-0123456789ab", Path("/s/workspaces"), "a1")


def test_agent_names_its_own_key_state_and_branch() -> None:
    assert (AGENT.key, AGENT.state_dir, AGENT.worktree, AGENT.branch) == (
        "app-0123456789ab-agent-a1", Path("/s/workspaces/app-0123456789ab-agent-a1"),
        Path("/s/workspaces/app-0123456789ab-agent-a1/worktree"), "agentbox/a1",
    )  # fmt: skip


@pytest.mark.parametrize("name", ["", "../x", "A1", "-x", "_x", "a/b", "a" * 33, "a b", "é"],
                         ids=["empty", "dotdot", "upper", "dash", "underscore", "slash", "long",
                              "space", "non-ascii"])  # fmt: skip
def test_bad_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_name(name)
    assert caught.value.hint == "use 1 to 32 of a-z, 0-9, - and _, starting with a letter or digit"


def test_good_names_pass() -> None:
    assert [check_name(n) for n in ("a1", "x", "9-b_c", "a" * 32)] == ["a1", "x", "9-b_c", "a" * 32]


def test_git_command_lines() -> None:
    wt = "/s/workspaces/app-0123456789ab-agent-a1/worktree"
    assert probe_argv("git", Path("/src/app")) == [
        "git", "-C", "/src/app", "rev-parse", "--path-format=absolute", "--show-toplevel",
        "--git-common-dir",
    ]  # fmt: skip
    assert add_argv("git", AGENT, new_branch=True) == [
        "git", "-C", "/src/app", "worktree", "add", "-b", "agentbox/a1", wt, "HEAD",
    ]  # fmt: skip
    assert add_argv("git", AGENT, new_branch=False) == [
        "git", "-C", "/src/app", "worktree", "add", wt, "agentbox/a1",
    ]  # fmt: skip
    assert status_argv("git", Path(wt)) == ["git", "-C", wt, "status", "--porcelain"]
    assert remove_argv("git", AGENT, force=True) == [
        "git", "-C", "/src/app", "worktree", "remove", "--force", wt,
    ]  # fmt: skip
    assert remove_argv("git", AGENT, force=False)[-2:] == ["remove", wt]


def test_git_mounts_read_only_but_what_a_commit_writes() -> None:
    mounts = GitMounts(common=Path("/src/app/.git"), admin=Path("/src/app/.git/worktrees/wt"),
                       branch="agentbox/a1")  # fmt: skip
    assert mounts.mounts() == (
        Mount(Path("/src/app/.git"), "/src/app/.git", readonly=True),
        Mount(Path("/src/app/.git/objects"), "/src/app/.git/objects"),
        Mount(Path("/src/app/.git/refs/heads/agentbox"), "/src/app/.git/refs/heads/agentbox"),
        Mount(Path("/src/app/.git/logs/refs/heads/agentbox"),
              "/src/app/.git/logs/refs/heads/agentbox"),
        Mount(Path("/src/app/.git/worktrees/wt"), "/src/app/.git/worktrees/wt"),
    )  # fmt: skip


def test_admin_dir_of_a_dot_git_file() -> None:
    wt = Path("/w")
    assert admin_dir("gitdir: /src/app/.git/worktrees/wt\n", wt) == Path(
        "/src/app/.git/worktrees/wt"
    )
    assert admin_dir("gitdir: ../app/.git/worktrees/wt\n", wt) == Path(
        "/w/../app/.git/worktrees/wt"
    )
    with pytest.raises(UsageError, match=r"/w/\.git does not name a gitdir"):
        admin_dir("", wt)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    require(shutil.which("git") is not None, "git is missing (apt-get install git)")
    project = tmp_path / "proj"
    project.mkdir()
    git(project, "init", "--quiet", "--initial-branch=main")
    git(project, "config", "user.email", "t@example.org")
    git(project, "config", "user.name", "T")
    (project / "a").write_text("a\n")
    git(project, "add", "a")
    git(project, "commit", "--quiet", "-m", "first")
    return project


def test_prepare_makes_the_worktree_from_head_and_reuses_it(repo: Path, tmp_path: Path) -> None:
    agent = agent_of(repo, "proj-0123456789ab", tmp_path / "workspaces", "a1")
    runner = SubprocessRunner({"PATH": "/usr/bin:/bin"})
    said: list[str] = []
    first = prepare(agent, runner, err=said.append)
    assert first.workdir == agent.worktree
    assert git(agent.worktree, "rev-parse", "--abbrev-ref", "HEAD") == "agentbox/a1\n"
    assert git(agent.worktree, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")
    common = (repo / ".git").resolve()
    assert first.git == GitMounts(common=common, admin=common / "worktrees" / "worktree",
                                  branch="agentbox/a1")  # fmt: skip
    assert all(p.is_dir() for p in first.git.writable)
    (agent.worktree / "b").write_text("b\n")
    assert prepare(agent, runner, err=said.append) == first  # reused: the file is still there
    assert (agent.worktree / "b").read_text() == "b\n"
    assert said == []
    assert git(repo, "status", "--porcelain") == ""


def test_prepare_reuses_the_branch_after_the_worktree_went(repo: Path, tmp_path: Path) -> None:
    agent = agent_of(repo, "proj-0123456789ab", tmp_path / "workspaces", "a1")
    runner = SubprocessRunner({"PATH": "/usr/bin:/bin"})
    prepare(agent, runner, err=print)
    git(agent.worktree, "commit", "--quiet", "--allow-empty", "-m", "by the agent")
    tip = git(repo, "rev-parse", "agentbox/a1")
    git(repo, "worktree", "remove", str(agent.worktree))
    prepare(agent, runner, err=print)
    assert git(agent.worktree, "rev-parse", "HEAD") == tip


def test_dry_run_makes_nothing(repo: Path, tmp_path: Path) -> None:
    agent = agent_of(repo, "proj-0123456789ab", tmp_path / "workspaces", "a1")
    planned = prepare(agent, SubprocessRunner({"PATH": "/usr/bin:/bin"}), err=print,
                      dry_run=True)  # fmt: skip
    assert planned.steps == (f"git -C {repo} worktree add -b agentbox/a1 {agent.worktree} HEAD",)
    assert not agent.state_dir.exists()
    assert git(repo, "branch", "--list", "agentbox/*") == ""


def test_outside_git_the_project_dir_is_used_and_said(tmp_path: Path) -> None:
    require(shutil.which("git") is not None, "git is missing (apt-get install git)")
    agent = agent_of(tmp_path, "p-0123456789ab", tmp_path / "workspaces", "a1")
    said: list[str] = []
    done = prepare(agent, SubprocessRunner({"PATH": "/usr/bin:/bin",
                                            "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}),
                   err=said.append)  # fmt: skip
    assert (done.workdir, done.git) == (tmp_path, None)
    assert said == [f"agentbox: {tmp_path} is not a git repository: agent a1 works in the "
                    "project directory itself (no worktree, no branch)"]  # fmt: skip


def test_a_subdirectory_of_a_repository_is_refused(repo: Path, tmp_path: Path) -> None:
    (repo / "sub").mkdir()
    agent = agent_of(repo / "sub", "sub-0123456789ab", tmp_path / "workspaces", "a1")
    with pytest.raises(UsageError, match="--agent needs the repository's top level") as caught:
        prepare(agent, SubprocessRunner({"PATH": "/usr/bin:/bin"}), err=print)
    assert caught.value.hint == f"cd {repo} and run it again"
