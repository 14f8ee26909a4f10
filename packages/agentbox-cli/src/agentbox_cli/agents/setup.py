"""Make (or reuse) an agent's worktree before a run: the side effects, through the runner."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agentbox_cli.agents.worktree import (
    Agent,
    GitMounts,
    add_argv,
    admin_dir,
    branch_exists_argv,
    probe_argv,
)
from agentbox_state.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from agentbox_state.runner import Runner


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """Where the agent works (its worktree, or the project outside git) and git's mounts."""

    workdir: Path
    git: GitMounts | None
    steps: tuple[str, ...] = ()  # what a dry run would have done


def repository(agent: Agent, runner: Runner, git: str) -> tuple[Path, Path] | None:
    """The project's (top level, common git dir), None when it is not in a git repository."""
    probe = runner.run(probe_argv(git, agent.project), check=False)
    lines = probe.stdout.splitlines()
    if probe.returncode != 0 or len(lines) < 2:
        return None
    top, common = Path(lines[0]), Path(lines[1])
    if os.path.realpath(top) != os.path.realpath(agent.project):
        raise UsageError(
            f"--agent needs the repository's top level, not {agent.project} inside {top}",
            hint=f"cd {top} and run it again",
        )
    return top, common


def prepare(
    agent: Agent, runner: Runner, *, err: Callable[[str], None], dry_run: bool = False,
    git: str = "git",
) -> Prepared:  # fmt: skip
    """The agent's worktree on branch ``agentbox/NAME`` (made from HEAD on first use, reused
    after), and the writable dirs its commits need; outside git, the project dir itself."""
    repo = repository(agent, runner, git)
    if repo is None:
        err(f"agentbox: {agent.project} is not a git repository: agent {agent.name} works in "
            "the project directory itself (no worktree, no branch)")  # fmt: skip
        return Prepared(workdir=agent.project, git=None)
    common = repo[1]
    dot_git = agent.worktree / ".git"
    steps: tuple[str, ...] = ()
    if not dot_git.is_file():
        known = runner.run(branch_exists_argv(git, agent.project, agent.branch), check=False)
        argv = add_argv(git, agent, new_branch=known.returncode != 0)
        if dry_run:
            # git names the admin dir after the worktree's basename (git-worktree(1))
            mounts = GitMounts(common=common, admin=common / "worktrees" / agent.worktree.name,
                               branch=agent.branch)  # fmt: skip
            import shlex

            return Prepared(workdir=agent.worktree, git=mounts, steps=(shlex.join(argv),))
        agent.state_dir.mkdir(parents=True, exist_ok=True)
        runner.run(argv)
    admin = Path(os.path.realpath(admin_dir(dot_git.read_text(encoding="utf-8"), agent.worktree)))
    mounts = GitMounts(common=common, admin=admin, branch=agent.branch)
    if not dry_run:
        for path in mounts.writable:
            path.mkdir(parents=True, exist_ok=True)
    return Prepared(workdir=agent.worktree, git=mounts, steps=steps)
