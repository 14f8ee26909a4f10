"""``--agent NAME`` for a run: the agent's workspace (its worktree at /workspace, its own key
and so its own state dir, sidecar and leases) and the git mounts its worktree needs."""

from __future__ import annotations

from pathlib import Path

from agentbox_cli.agents.setup import prepare
from agentbox_cli.agents.worktree import agent_of
from agentbox_state.workspace import Workspace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agentbox_podman.podman import Mount
    from agentbox_state.cli.app import Context
    from agentbox_state.runner import Runner


def enter(ctx: Context, project: Workspace, runner: Runner) -> tuple[Workspace, tuple[Mount, ...]]:
    assert ctx.flags.agent is not None
    agent = agent_of(Path(project.path), project.key, ctx.paths.workspaces, ctx.flags.agent)
    prepared = prepare(agent, runner, err=ctx.err, dry_run=ctx.flags.dry_run)
    for step in prepared.steps:
        ctx.out(f"agent {agent.name}: {step}")
    mounts = prepared.git.mounts() if prepared.git is not None else ()
    workspace = Workspace(path=str(prepared.workdir), slug=project.slug, key=agent.key)
    return workspace, mounts
