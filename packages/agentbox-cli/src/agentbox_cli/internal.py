"""``agentbox internal ...``: helpers agentbox starts itself (not for direct use).

``sidecar-reap STATE_DIR IMAGE GRACE`` removes container mode's idle Nix sidecar after its grace;
``krun-enter LAUNCH_CONF`` is the libkrun helper process (the runtime itself starts it as
``python -m agentbox_krun.enter``); ``--`` before the operands is allowed."""

from __future__ import annotations

import os

from agentbox_state.cli.app import Context, Verb
from agentbox_state.errors import UsageError


def internal(ctx: Context) -> int:
    from pathlib import Path

    if ctx.args.action == "krun-enter":
        from agentbox_krun.helper import main as helper

        if len(ctx.args.command) != 1:
            raise UsageError("usage: agentbox internal krun-enter LAUNCH_CONF")
        return helper(["AGENTBOX_LIBKRUN_LIBRARY", ctx.args.command[0]])

    from agentbox_cli.container import sidecar
    from agentbox_cli.container.plan import plan_sidecar

    words = ctx.args.command
    if ctx.args.action != "sidecar-reap" or len(words) != 3 or not words[2].isdigit():
        raise UsageError("usage: agentbox internal sidecar-reap STATE_DIR IMAGE GRACE")
    state_dir, image, grace = Path(words[0]), words[1], int(words[2])
    plan = plan_sidecar(image, state_dir.name, state_dir, rootless=os.getuid() != 0,
                        debug=ctx.flags.debug)  # fmt: skip
    return sidecar.reap(plan, state_dir, grace, ctx.runner())


INTERNAL = Verb(
    "internal", "helpers agentbox runs itself (not for direct use)", internal,
    actions=("sidecar-reap", "krun-enter"), runs_command=True, operand="CONF", hidden=True,
)  # fmt: skip
