"""An agent of a project (pure): its name, branch, state dir and git worktree, the ``git``
command lines that make, inspect and remove the worktree, and the mounts that let git work
inside a sandbox that sees the worktree only at ``/workspace``.

git-worktree(1): a linked worktree's ``.git`` is a file ``gitdir: <common>/worktrees/<id>``
naming, by its absolute path, the worktree's own admin dir (HEAD, index, logs/HEAD); that
dir's ``commondir`` points back at the repository's git dir, which holds the objects and the
refs every worktree shares.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agentbox_podman.podman import Mount
from agentbox_state.errors import UsageError

NAME_MAX = 32
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
BRANCH_PREFIX = "agentbox/"
KEY_INFIX = "-agent-"


def check_name(name: str) -> str:
    """``name`` if it is a valid agent name: 1 to 32 of a-z 0-9 - _, starting with a letter or
    digit (a git branch component, a Podman name and a file name alike); else UsageError."""
    if not name or len(name) > NAME_MAX or not set(name) <= NAME_CHARS or name[0] in "-_":
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise UsageError(
            f"--agent {shown!r} is not an agent name",
            hint=f"use 1 to {NAME_MAX} of a-z, 0-9, - and _, starting with a letter or digit",
        )
    return name


def agent_key(project_key: str, name: str) -> str:
    """The agent's workspace key: its state dir, sidecar and task labels are its own."""
    return f"{project_key}{KEY_INFIX}{name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    name: str
    project: Path  # the project's directory (a git top level, or not a repository)
    key: str
    state_dir: Path  # workspaces/<key>

    @property
    def branch(self) -> str:
        return BRANCH_PREFIX + self.name

    @property
    def worktree(self) -> Path:
        return self.state_dir / "worktree"


def agent_of(project: Path, project_key: str, workspaces: Path, name: str) -> Agent:
    key = agent_key(project_key, check_name(name))
    return Agent(name=name, project=project, key=key, state_dir=workspaces / key)


def probe_argv(git: str, project: Path) -> list[str]:
    """The repository's top level and common git dir, both absolute (git-rev-parse(1))."""
    return [git, "-C", os.fspath(project), "rev-parse", "--path-format=absolute",
            "--show-toplevel", "--git-common-dir"]  # fmt: skip


def branch_exists_argv(git: str, project: Path, branch: str) -> list[str]:
    return [git, "-C", os.fspath(project), "rev-parse", "--verify", "--quiet",
            f"refs/heads/{branch}"]  # fmt: skip


def add_argv(git: str, agent: Agent, *, new_branch: bool) -> list[str]:
    """``git worktree add``: a new branch ``agentbox/NAME`` from HEAD, or the branch kept from
    an earlier worktree (git-worktree(1) ``add [-b <new-branch>] <path> [<commit-ish>]``)."""
    head = ["-C", os.fspath(agent.project), "worktree", "add"]
    where = os.fspath(agent.worktree)
    if new_branch:
        return [git, *head, "-b", agent.branch, where, "HEAD"]
    return [git, *head, where, agent.branch]


def status_argv(git: str, worktree: Path) -> list[str]:
    """What is uncommitted in ``worktree`` (git-status(1) ``--porcelain``: empty when clean)."""
    return [git, "-C", os.fspath(worktree), "status", "--porcelain"]


def remove_argv(git: str, agent: Agent, *, force: bool) -> list[str]:
    """git-worktree(1) ``remove [--force] <worktree>``; the branch and its commits stay."""
    force_opt = ["--force"] if force else []
    return [git, "-C", os.fspath(agent.project), "worktree", "remove", *force_opt,
            os.fspath(agent.worktree)]  # fmt: skip


def admin_dir(dot_git_text: str, worktree: Path) -> Path:
    """The admin dir a worktree's ``.git`` file names (``gitdir: PATH``, relative to the
    worktree when git wrote it relative)."""
    first = dot_git_text.splitlines()[0] if dot_git_text else ""
    if not first.startswith("gitdir: "):
        raise UsageError(f"{worktree}/.git does not name a gitdir",
                         hint="remove the agent (agentbox agents remove NAME --force)")  # fmt: skip
    return worktree / first.removeprefix("gitdir: ").strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class GitMounts:
    """The repository's git dir at its own absolute path, read-only, with writable mounts over
    exactly what a commit on ``branch`` in this worktree writes."""

    common: Path  # the repository's git dir
    admin: Path  # <common>/worktrees/<id>
    branch: str

    @property
    def writable(self) -> tuple[Path, ...]:
        parent = self.branch.rpartition("/")[0]
        return (
            self.common / "objects",  # git-add(1), git-commit(1): new loose objects
            self.common / "refs/heads" / parent,  # refs/heads/agentbox/NAME(.lock)
            self.common / "logs/refs/heads" / parent,  # the branch's reflog
            self.admin,  # HEAD, index, logs/HEAD, ORIG_HEAD of this worktree
        )

    def mounts(self) -> tuple[Mount, ...]:
        common = Mount(self.common, os.fspath(self.common), readonly=True)
        return (common, *(Mount(p, os.fspath(p)) for p in self.writable))
