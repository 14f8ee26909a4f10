"""``agentbox ps [--json] [--quiet]``, ``agentbox stop TASK``, ``agentbox kill TASK``.

``ps`` lists every running task of this user (all projects, all modes); ``--quiet`` prints only
their names, one a line, never anything on stderr, and exits 0 (shell completion calls it).
``stop`` asks a task to end (``podman stop``; SIGTERM to the VM helper), ``kill`` does not
(``podman kill --signal KILL``; SIGKILL). Both take one name ``ps`` shows and refuse any other:
nothing that is not an agentbox task is ever signalled. Only the verbs' records are imported at
start-up; the inventory loads when they run.
"""

from __future__ import annotations

from agentbox_state.cli.app import Context, Verb
from agentbox_state.cli.args import Option
from agentbox_state.cli.verbs import JSON
from agentbox_state.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from agentbox_cli.tasks.inventory import Task

QUIET = Option("--quiet", "print only the task names, one a line", short="-q")
STOP_WAIT = 15.0  # seconds a VM helper gets to end after SIGTERM before stop says so
KILL_WAIT = 5.0


def _bases(ctx: Context) -> list[tuple[str, Path]]:
    from agentbox_cli.tasks.report import loftd_base

    return [("microvm", ctx.paths.base), ("loftd", loftd_base(ctx.environ))]


def _tasks(ctx: Context) -> list[Task]:
    from agentbox_cli.tasks.inventory import inventory

    return inventory(ctx.runner(), _bases(ctx), debug=ctx.flags.debug)


def ps(ctx: Context) -> int:
    if ctx.args.flag("quiet"):
        try:
            names = [t.name for t in _tasks(ctx)]
        except Exception:  # noqa: BLE001 - completion asks this: it must never fail or talk
            names = []
        if names:
            ctx.out("\n".join(names))
        return 0
    import time

    from agentbox_cli.tasks.report import render_json, render_text

    tasks = _tasks(ctx)
    ctx.out(render_json(tasks) if ctx.args.flag("json") else render_text(tasks, time.time()))
    return 0


def _operand(ctx: Context) -> str:
    words = ctx.args.command
    if len(words) != 1:
        got = "none" if not words else " ".join(words)
        raise UsageError(f"'{ctx.args.verb}' takes one task name (got {got})",
                         hint="'agentbox ps' lists the running tasks by name")  # fmt: skip
    return words[0]


def _signal(ctx: Context, *, force: bool) -> int:
    name = _operand(ctx)
    from agentbox_cli.tasks.deliver import send
    from agentbox_cli.tasks.inventory import find, plan_signal

    task = find(_tasks(ctx), name)
    plan = plan_signal(task, force=force, debug=ctx.flags.debug)
    ended = send(plan, ctx.runner(), wait=KILL_WAIT if force else STOP_WAIT)
    verb = "killed" if force else "stopped"
    if ended:
        ctx.out(f"{verb} {task.name} ({task.mode}, {task.project or 'project unknown'})")
        return 0
    ctx.err(f"agentbox: {plan.describe()} sent, but {task.name} still runs"
            + ("" if force else f"\nhint: agentbox kill {task.name}"))  # fmt: skip
    return 1


def stop(ctx: Context) -> int:
    return _signal(ctx, force=False)


def kill(ctx: Context) -> int:
    return _signal(ctx, force=True)


PS = Verb("ps", "list this user's running tasks of every project and mode", ps, (JSON, QUIET))
# runs_command: the app refuses words after a verb that runs none, and TASK is such a word
STOP = Verb("stop", "ask a running task to end (podman stop, or SIGTERM to its VM)", stop,
            runs_command=True, operand="TASK")  # fmt: skip
KILL = Verb("kill", "end a running task at once (SIGKILL)", kill, runs_command=True,
            operand="TASK")  # fmt: skip
