"""The verbs both command lines share: ``paths`` and ``config``. Both only read."""

from __future__ import annotations

import argparse

from agentbox_state.cli.app import Context, Verb, effective_settings
from agentbox_state.cli.report import config_report, paths_report, render
from agentbox_state.workspace import current_workspace


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _paths(ctx: Context) -> int:
    with ctx.profiler.phase("workspace_identity"):
        workspace = current_workspace()
    ctx.out(render(paths_report(ctx.paths, workspace), as_json=ctx.args.json))
    return 0


def _config(ctx: Context) -> int:
    report = config_report(ctx.config.path, ctx.config.exists, effective_settings(ctx))
    ctx.out(render(report, as_json=ctx.args.json))
    return 0


PATHS = Verb(
    "paths",
    "show the state, config and cache locations for the current directory (creates nothing)",
    _paths,
    _json_flag,
)
CONFIG = Verb(
    "config",
    "show the effective configuration and where each value came from",
    _config,
    _json_flag,
)
