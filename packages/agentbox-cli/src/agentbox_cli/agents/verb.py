"""``agentbox agents [--json]`` and ``agentbox agents remove NAME [--force]``.

Only the verb's record is imported at start-up; git, the keep facts and the removers load when
it runs.
"""

from __future__ import annotations

from agentbox_state.cli.app import Context, Verb
from agentbox_state.cli.args import Option
from agentbox_state.cli.verbs import JSON

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from agentbox_cli.agents.inventory import AgentFact
    from agentbox_cli.agents.worktree import Agent
    from agentbox_state.runner import Runner

FORCE = Option("--force", "remove: also a worktree with uncommitted changes (they are lost)")


def _fact(name: str, state_dir: Path, runner: Runner) -> AgentFact:
    from agentbox_cli.agents.inventory import AgentFact
    from agentbox_cli.keep.facts import project_facts
    from agentbox_cli.keep.plan import plan_forget
    from agentbox_storage.extents import shared_bytes
    from agentbox_storage.statedir import mount_points

    mounts = mount_points()  # not descended into (a running agent's overlay shows the image)
    project = project_facts(state_dir, runner, current=False, mounts=mounts)
    worktree = state_dir / "worktree"
    return AgentFact(name=name, state_dir=state_dir,
                     worktree=worktree if (worktree / ".git").is_file() else None,
                     allocated=project.usage.allocated,
                     shared=shared_bytes(state_dir, skip=mounts),
                     running=plan_forget(project, name).running)  # fmt: skip


def _list(ctx: Context) -> int:
    from agentbox_cli.agents.inventory import agent_dirs, render, report
    from agentbox_state.workspace import current_workspace

    workspace = current_workspace()
    runner = ctx.runner()
    facts = [_fact(n, d, runner) for n, d in agent_dirs(ctx.paths.workspaces, workspace.key)]
    doc = report(workspace.path, facts)
    if ctx.args.flag("json"):
        import json

        ctx.out(json.dumps(doc, indent=2))
    else:
        ctx.out(render(doc))
    return 0


def _remove(ctx: Context) -> int:
    from pathlib import Path

    from agentbox_cli.agents.worktree import agent_of
    from agentbox_state.errors import AgentboxError, UsageError
    from agentbox_state.workspace import current_workspace

    if len(ctx.args.command) != 1:
        raise UsageError("agents remove takes one agent NAME", hint="see 'agentbox agents'")
    workspace = current_workspace()
    agent = agent_of(Path(workspace.path), workspace.key, ctx.paths.workspaces,
                     ctx.args.command[0])  # fmt: skip
    if not agent.state_dir.is_dir():
        raise AgentboxError(f"{workspace.path} has no agent {agent.name}",
                            hint="'agentbox agents' lists them")  # fmt: skip
    from agentbox_cli.agents.enter import setup_lock

    setup = setup_lock(ctx.paths.workspaces, agent)
    setup.acquire()  # not while a start of this agent makes its state or worktree
    try:
        return _remove_agent(ctx, agent)
    finally:
        setup.release()


def _remove_agent(ctx: Context, agent: Agent) -> int:
    import os

    from agentbox_cli.agents.worktree import remove_argv, status_argv
    from agentbox_cli.keep.facts import project_facts
    from agentbox_cli.keep.plan import plan_forget
    from agentbox_state.errors import AgentboxError
    from agentbox_state.parse import human_size as human
    from agentbox_storage.statedir import mount_points

    runner = ctx.runner()
    project = project_facts(agent.state_dir, runner, current=False, mounts=mount_points())
    plan = plan_forget(project, f"agent {agent.name}")
    if plan.running:
        raise AgentboxError(
            f"refusing to remove agent {agent.name} while it runs: " + "; ".join(plan.running),
            hint="wait for its task to end (or stop it) and retry; nothing was removed",
        )
    force = ctx.args.flag("force")
    has_worktree = (agent.worktree / ".git").is_file()
    if has_worktree:
        changes = runner.run(status_argv("git", agent.worktree)).stdout.splitlines()
        if changes and not force:
            raise AgentboxError(
                f"agent {agent.name}'s worktree {agent.worktree} has {len(changes)} "
                "uncommitted change(s)",
                hint=f"commit them on {agent.branch} first, or add --force to lose them; "
                "nothing was removed",
            )
        runner.run(remove_argv("git", agent, force=force or bool(changes)))
    from agentbox_cli.keep.execute import execute_forget
    from agentbox_cli.keep.verb import _userns

    execute_forget(plan, runner, userns=_userns(ctx), rootless=os.getuid() != 0,
                   debug=ctx.flags.debug)  # fmt: skip
    kept = f"; branch {agent.branch} kept" if has_worktree else ""
    ctx.out(f"removed agent {agent.name}: {agent.state_dir} ({human(plan.total)}){kept}")
    return 0


def run(ctx: Context) -> int:
    if ctx.args.action == "remove":
        return _remove(ctx)
    if ctx.args.command:
        from agentbox_state.errors import UsageError

        raise UsageError(f"unexpected {ctx.args.command[0]!r} after 'agents'",
                         hint="to remove one: agentbox agents remove NAME")  # fmt: skip
    return _list(ctx)


AGENTS = Verb(
    "agents",
    "this project's agents (--agent NAME): branch, worktree, state size, running; remove NAME",
    run,
    (JSON, FORCE),
    actions=("remove",),
    action_required=False,
    runs_command=True,
    operand="NAME",
)
