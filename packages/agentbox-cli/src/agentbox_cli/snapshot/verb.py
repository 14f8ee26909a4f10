"""``agentbox snapshot create|list|restore|delete NAME``: copy-on-write snapshots of the current
project's persistent state (its raw disks, its /nix overlay upper, its cargo dir).

Only the verb's record is imported at start-up; the facts, the planner and the executor load
when it runs.
"""

from __future__ import annotations

from agentbox_state.cli.app import Context, Verb
from agentbox_state.cli.args import Option
from agentbox_state.cli.verbs import JSON

COPY = Option("--copy", "make full copies where the filesystem cannot share blocks (slow, big)")
DISCARD = Option("--discard-current", "restore without snapshotting the current state first")
ACTIONS = ("create", "list", "restore", "delete")


def _userns(ctx: Context) -> tuple[str, ...]:
    """``buildah unshare`` for trees of subordinate ids (a rootless upper); nothing as root."""
    import os
    import shutil

    if os.getuid() == 0 or shutil.which("buildah") is None:
        return ()
    from agentbox_podman import buildah

    return tuple(buildah.unshare(debug=ctx.flags.debug))


def run(ctx: Context) -> int:
    import time

    from agentbox_cli import __version__
    from agentbox_cli.snapshot import plan as planner
    from agentbox_cli.snapshot.facts import snapshot_facts
    from agentbox_state.errors import UsageError
    from agentbox_state.workspace import current_workspace

    action = ctx.args.action or "list"
    names = ctx.args.command
    if action == "list":
        if names:
            raise UsageError(f"'snapshot list' takes no NAME (got {' '.join(names)})",
                             hint="see 'agentbox snapshot --help'")  # fmt: skip
    elif len(names) != 1:
        raise UsageError(f"'snapshot {action}' takes one NAME (got {len(names)})",
                         hint=f"agentbox snapshot {action} NAME")  # fmt: skip
    state_dir = ctx.paths.layout(current_workspace()).state_dir
    runner = ctx.runner()
    facts = snapshot_facts(state_dir, runner, probe_reflink=action in ("create", "restore"))
    if action == "list":
        report = planner.list_report(facts)
        if ctx.args.flag("json"):
            import json

            ctx.out(json.dumps(report, indent=2))
        else:
            ctx.out(planner.render_list(report))
        return 0
    name, copy, now = names[0], ctx.args.flag("copy"), time.time()
    if action == "create":
        plan = planner.plan_create(facts, name, copy=copy, now=now, version=__version__)
    elif action == "restore":
        plan = planner.plan_restore(facts, name, copy=copy, now=now, version=__version__,
                                    discard_current=ctx.args.flag("discard_current"))  # fmt: skip
    else:
        plan = planner.plan_delete(facts, name)
    if ctx.flags.dry_run:
        ctx.out("\n".join(plan.describe()))
        return 0
    from agentbox_cli.snapshot.execute import execute, holding

    say = ctx.err if ctx.flags.debug else None
    if action == "delete":
        execute(plan, runner, prefix=_userns(ctx), say=say)
    else:
        with holding(state_dir):
            execute(plan, runner, prefix=_userns(ctx), say=say)
    done = {"create": "created", "restore": "restored", "delete": "deleted"}[action]
    ctx.out(f"{done} snapshot {name} of {current_workspace().path}")
    return 0


SNAPSHOT = Verb(
    "snapshot", "copy-on-write snapshots of this project's disks, /nix upper and cargo dir",
    run, (JSON, COPY, DISCARD), actions=ACTIONS, runs_command=True, operand="NAME",
)  # fmt: skip
