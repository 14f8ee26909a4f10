"""``--agent NAME`` for a run: the agent's workspace (its worktree at /workspace, its own key
and so its own state dir, sidecar and leases) and the git mounts its worktree needs."""

from __future__ import annotations

from pathlib import Path

from agentbox_cli.agents.setup import prepare
from agentbox_cli.agents.worktree import Agent, agent_of
from agentbox_state.lock import FileLock
from agentbox_state.workspace import Workspace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agentbox_podman.podman import Mount
    from agentbox_state.cli.app import Context
    from agentbox_state.runner import Runner


def _fork(ctx: Context, project_state: Path, agent_state: Path, runner: Runner) -> list[str]:
    """The agent's first state from the project's (``agents.fork``), unless it is in use."""
    import os

    from agentbox_cli.agents.fork import fork, persistent_items
    from agentbox_podman.podman import unshare

    if not persistent_items(project_state):
        return []
    from agentbox_cli.keep.facts import project_facts
    from agentbox_cli.keep.plan import plan_forget
    from agentbox_storage.statedir import mount_points

    facts = project_facts(project_state, runner, current=False, mounts=mount_points())
    busy = plan_forget(facts, project_state.name).running
    userns = tuple(unshare(debug=ctx.flags.debug)) if os.getuid() != 0 else ()
    if busy:
        return fork(project_state, agent_state, runner, userns=userns, busy=busy, say=ctx.err)
    from agentbox_cli.container.sidecar import snapshot_hooks
    from loftd.snapshot.execute import holding
    from loftd.snapshot.plan import SnapshotError

    try:
        # the locks a run of the project takes, held while its state is copied: a run (or a
        # snapshot restore) that starts meanwhile waits or is refused, and the copy is whole
        with holding(project_state, snapshot_hooks()):
            return fork(project_state, agent_state, runner, userns=userns, busy=(),
                        say=ctx.err)  # fmt: skip
    except SnapshotError as err:
        ctx.err(f"agentbox: the agent's state starts empty: {err.message}")
        return []


# how long a second start of the same agent waits for the first one to have made its state
# and worktree (a fork and a `git worktree add`: seconds at most)
SETUP_WAIT_SECONDS = 120.0


def setup_lock(workspaces: Path, agent: Agent) -> FileLock:
    """Held while an agent's state and worktree are made or removed: beside the agents' state
    dirs, not in the project's locks (held, one of those says the project's state is in use,
    and a fork would not be made)."""
    return FileLock(workspaces / f".{agent.key}.lock",
                    what=f"agent {agent.name} of {agent.project}")  # fmt: skip


def existing(ctx: Context, project: Workspace) -> Workspace:
    """The workspace of ``--agent NAME`` for a verb that works on its state and makes none
    (``libkrun resize``, ``reset-nix``): the project's own without ``--agent``."""
    if ctx.flags.agent is None:
        return project
    agent = agent_of(Path(project.path), project.key, ctx.paths.workspaces, ctx.flags.agent)
    if not agent.state_dir.is_dir():
        from agentbox_state.errors import AgentboxError

        raise AgentboxError(
            f"{project.path} has no agent {agent.name}",
            hint="'agentbox agents' lists them; a run with --agent makes one",
        )
    return Workspace(path=project.path, slug=project.slug, key=agent.key)


def enter(ctx: Context, project: Workspace, runner: Runner) -> tuple[Workspace, tuple[Mount, ...]]:
    """The agent's workspace and git mounts, its state and worktree made first if need be:
    under the agent's lock (``workspaces/.<agent key>.lock``), so that two starts of one agent
    at once neither fork nor add its worktree twice (the second waits, then finds them made)."""
    assert ctx.flags.agent is not None
    agent = agent_of(Path(project.path), project.key, ctx.paths.workspaces, ctx.flags.agent)
    if ctx.flags.dry_run:  # nothing is made, so nothing is locked
        prepared = prepare(agent, runner, err=ctx.err, dry_run=True)
    else:
        lock = setup_lock(ctx.paths.workspaces, agent)
        lock.acquire(wait=SETUP_WAIT_SECONDS, on_wait=ctx.err)
        try:
            if not agent.state_dir.exists():
                forked = _fork(ctx, ctx.paths.layout(project).state_dir, agent.state_dir,
                               runner)  # fmt: skip
                if forked:
                    ctx.err(f"agentbox: agent {agent.name} forked the project's "
                            + ", ".join(forked))  # fmt: skip
            prepared = prepare(agent, runner, err=ctx.err)
        finally:
            lock.release()
    for step in prepared.steps:
        ctx.out(f"agent {agent.name}: {step}")
    mounts = prepared.git.mounts() if prepared.git is not None else ()
    workspace = Workspace(path=str(prepared.workdir), slug=project.slug, key=agent.key)
    return workspace, mounts
