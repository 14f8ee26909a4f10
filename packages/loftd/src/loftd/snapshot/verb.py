"""``snapshot create|list|restore|delete NAME`` (agentbox's and loftd's): copy-on-write
snapshots of the current project's persistent state (its raw disks, its /nix overlay upper, its
cargo dir).

Only the verb's record is imported at start-up; the facts, the planner, the executor and the
app's hooks load when it runs.
"""

from __future__ import annotations

from agentbox_state.cli.app import Context, Verb
from agentbox_state.cli.args import Option
from agentbox_state.cli.verbs import JSON

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from loftd.snapshot.hooks import StateHooks

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


def run(ctx: Context, hooks: StateHooks) -> int:
    import time

    from agentbox_state.errors import UsageError
    from agentbox_state.workspace import current_workspace
    from loftd.snapshot import plan as planner
    from loftd.snapshot.facts import snapshot_facts

    action = ctx.args.action or "list"
    names = ctx.args.command
    if action == "list":
        if names:
            raise UsageError(f"'snapshot list' takes no NAME (got {' '.join(names)})",
                             hint=f"see '{ctx.spec.name} snapshot --help'")  # fmt: skip
    elif len(names) != 1:
        raise UsageError(f"'snapshot {action}' takes one NAME (got {len(names)})",
                         hint=f"{ctx.spec.name} snapshot {action} NAME")  # fmt: skip
    state_dir = ctx.paths.layout(current_workspace()).state_dir
    runner = ctx.runner()
    facts = snapshot_facts(state_dir, runner, hooks, app=ctx.spec.name,
                           probe_reflink=action in ("create", "restore"))  # fmt: skip
    if action == "list":
        report = planner.list_report(facts)
        if ctx.args.flag("json"):
            import json

            ctx.out(json.dumps(report, indent=2))
        else:
            ctx.out(planner.render_list(report, ctx.spec.name))
        return 0
    name, copy, now = names[0], ctx.args.flag("copy"), time.time()
    if action == "create":
        plan = planner.plan_create(facts, name, copy=copy, now=now, version=ctx.spec.version)
    elif action == "restore":
        plan = planner.plan_restore(facts, name, copy=copy, now=now, version=ctx.spec.version,
                                    discard_current=ctx.args.flag("discard_current"))  # fmt: skip
    else:
        plan = planner.plan_delete(facts, name)
    if ctx.flags.dry_run:
        ctx.out("\n".join(plan.describe()))
        return 0
    from loftd.snapshot.execute import execute, holding

    say = ctx.err if ctx.flags.debug else None
    if action == "delete":
        execute(plan, runner, prefix=_userns(ctx), say=say)
    else:
        with holding(state_dir, hooks):
            execute(plan, runner, prefix=_userns(ctx), say=say)
    done = {"create": "created", "restore": "restored", "delete": "deleted"}[action]
    ctx.out(f"{done} snapshot {name} of {current_workspace().path}")
    return 0


def snapshot_verb(hooks: Callable[[], StateHooks]) -> Verb:
    """The verb, with the app's hooks (made when it runs: they may import the app's modes)."""
    return Verb(
        "snapshot", "copy-on-write snapshots of this project's disks, /nix upper and cargo dir",
        lambda ctx: run(ctx, hooks()), (JSON, COPY, DISCARD), actions=ACTIONS,
        runs_command=True, operand="NAME",
    )  # fmt: skip
