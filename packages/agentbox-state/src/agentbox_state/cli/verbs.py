"""The verbs both command lines share: ``paths``, ``config`` and ``completion``. All only read."""

from __future__ import annotations

from agentbox_state.cli.app import Context, Verb, effective_settings
from agentbox_state.cli.args import Option
from agentbox_state.cli.flags import global_options
from agentbox_state.cli.report import config_report, paths_report, render
from agentbox_state.workspace import current_workspace

JSON = Option("--json", "print JSON for scripts")
SHELLS = ("bash", "fish", "zsh")  # completion's actions (completion.GENERATORS has each)


def _paths(ctx: Context) -> int:
    with ctx.profiler.phase("workspace_identity"):
        workspace = current_workspace()
    ctx.out(render("paths", paths_report(ctx.paths, workspace), as_json=ctx.args.flag("json")))
    return 0


def _config(ctx: Context) -> int:
    report = config_report(ctx.config.path, ctx.config.exists, effective_settings(ctx))
    ctx.out(render("config", report, as_json=ctx.args.flag("json")))
    return 0


PATHS = Verb(
    "paths",
    "show the state, config and cache locations for the current directory (creates nothing)",
    _paths,
    (JSON,),
)
CONFIG = Verb(
    "config",
    "show the effective configuration and where each value came from",
    _config,
    (JSON,),
)


def _completion(ctx: Context) -> int:
    from agentbox_state.cli.completion import script

    assert ctx.args.action is not None  # the parser requires one of SHELLS
    opts = global_options(ctx.spec.image_env, agent=ctx.spec.agents)
    ctx.out(script(ctx.args.action, ctx.spec, ctx.verbs, opts))
    return 0


COMPLETION = Verb(
    "completion",
    "print the shell completion script: completion bash|fish|zsh (see the README to install)",
    _completion,
    actions=SHELLS,
)
