"""``agentbox doctor [--json]``: probe the host, judge every mode's preconditions, print them.

Exit status 0 when the default mode (``[run] mode``) can run here, 1 otherwise. Only the
verb's record is imported at start-up; the probe and the checks load when it runs.
"""

from __future__ import annotations

from agentbox_state.cli.app import Context, Verb
from agentbox_state.cli.verbs import JSON


def run(ctx: Context) -> int:
    import agentbox_guest_init
    from agentbox_cli.doctor.checks import (
        DefaultMode,
        all_checks,
        render_json,
        render_text,
        report,
    )
    from agentbox_cli.doctor.probe import probe_host
    from agentbox_cli.schema import MODE_KEY
    from agentbox_podman.images import LOCAL_IMAGE
    from agentbox_state.cli.app import effective_settings

    mode = effective_settings(ctx)[MODE_KEY]
    facts = probe_host(
        ctx.runner(), ctx.environ, base=ctx.paths.base, images=ctx.paths.images,
        image_ref=ctx.flags.image.value if isinstance(ctx.flags.image.value, str)
        else LOCAL_IMAGE,
        guest_init_version=agentbox_guest_init.__version__,
    )  # fmt: skip
    default = DefaultMode(mode=str(mode.value), source=mode.source)
    rep = report(all_checks(facts), default, str(ctx.paths.config_file))
    ctx.out(render_json(rep) if ctx.args.flag("json") else render_text(rep))
    return 0 if rep.can_run_default else 1


DOCTOR = Verb(
    "doctor",
    "check what every mode needs from this host (exit 0: the default mode can run)",
    run,
    (JSON,),
)
