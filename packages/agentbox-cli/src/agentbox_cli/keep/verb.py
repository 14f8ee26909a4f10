"""``agentbox disks [--json]``, ``agentbox gc [--dry-run]`` and ``agentbox forget [--force]``.

Only the verbs' records are imported at start-up; the facts, the planner and the removers load
when one runs.
"""

from __future__ import annotations

from agentbox_state.cli.app import Context, Verb
from agentbox_state.cli.args import Option
from agentbox_state.cli.verbs import JSON

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agentbox_cli.keep.facts import KeepFacts

FORCE = Option("--force", "remove the project's state, disks included (refused while it runs)")


def _facts(ctx: Context, *, only_current: bool = False) -> KeepFacts:
    from agentbox_cli.keep.facts import keep_facts
    from agentbox_state.workspace import current_workspace

    paths = ctx.paths
    key = current_workspace().key
    return keep_facts(paths.base, paths.images, paths.sccache, paths.workspaces, ctx.runner(),
                      current=key, only=key if only_current else None)  # fmt: skip


def _userns(ctx: Context) -> tuple[str, ...]:
    """Where the rootless task roots, ingests and overlays were made: ``buildah unshare``
    (the same subordinate ids as ``podman unshare``); nothing as root, or without Buildah."""
    import os
    import shutil

    if os.getuid() == 0 or shutil.which("buildah") is None:
        return ()
    from agentbox_podman import buildah

    return tuple(buildah.unshare(debug=ctx.flags.debug))


def disks(ctx: Context) -> int:
    from agentbox_cli.keep.plan import disks_report, render_disks

    report = disks_report(_facts(ctx))
    if ctx.args.flag("json"):
        import json

        ctx.out(json.dumps(report, indent=2))
    else:
        ctx.out(render_disks(report))
    return 0


def gc(ctx: Context) -> int:
    import os

    from agentbox_cli.keep.plan import plan_gc

    plan = plan_gc(_facts(ctx))
    if ctx.flags.dry_run or not plan.items:
        ctx.out("\n".join(plan.describe(dry_run=True)))
        return 0
    from agentbox_cli.keep.execute import execute_gc

    failures: list[str] = []

    def warn(line: str) -> None:
        failures.append(line)
        ctx.err(f"agentbox gc: warning: {line}")

    done = execute_gc(plan, ctx.runner(), ctx.paths.images, userns=_userns(ctx),
                      rootless=os.getuid() != 0, debug=ctx.flags.debug, warn=warn)  # fmt: skip
    for item in done:
        ctx.out(f"removed {item.describe()}")
    ctx.out(f"{len(done)} item(s) removed; freed {_size(sum(i.size for i in done))}")
    return 1 if failures else 0


def _size(n: int) -> str:
    from agentbox_state.parse import human_size as human

    return human(n)


def forget(ctx: Context) -> int:
    import os

    from agentbox_cli.keep.plan import plan_forget
    from agentbox_state.errors import AgentboxError
    from agentbox_state.workspace import current_workspace

    workspace = current_workspace()
    facts = _facts(ctx, only_current=True)
    if not facts.projects:
        ctx.out(f"agentbox keeps no state for {workspace.path}: nothing to forget")
        return 0
    plan = plan_forget(facts.projects[0], workspace.path)
    if not ctx.args.flag("force"):
        ctx.out("\n".join(plan.describe()))
        raise AgentboxError(
            f"nothing was removed: forgetting {workspace.path} deletes its disks (the /nix "
            "store, container images) and caches above",
            hint="add --force if that is what you want",
        )
    if plan.running:
        raise AgentboxError(
            f"refusing to forget {workspace.path} while it is in use: " + "; ".join(plan.running),
            hint="wait for that task to end (or stop it) and retry; nothing was removed",
        )
    from agentbox_cli.keep.execute import execute_forget

    execute_forget(plan, ctx.runner(), userns=_userns(ctx), rootless=os.getuid() != 0,
                   debug=ctx.flags.debug)  # fmt: skip
    ctx.out(f"forgot {workspace.path}: removed {plan.project.state_dir} ({_size(plan.total)})")
    return 0


DISKS = Verb(
    "disks", "every project's disks, caches and overlay uppers: sizes, leases, last use", disks,
    (JSON,),
)  # fmt: skip
GC = Verb("gc", "remove leftovers nothing uses, never a disk (--dry-run: list them, sized)", gc)
FORGET = Verb("forget", "remove this project's state, disks included (--force; refused while "
              "it runs)", forget, (FORCE,))  # fmt: skip
