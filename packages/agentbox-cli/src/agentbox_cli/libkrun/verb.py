"""``agentbox [libkrun] [-- CMD]``, ``libkrun resize``, ``libkrun reset-nix``."""

from __future__ import annotations

from agentbox_state.cli.app import Context, Verb
from agentbox_state.cli.args import Option
from agentbox_state.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agentbox_podman.podman import Mount
    from agentbox_state.runner import Runner

OPTIONS = (
    Option("--tsi", "TSI networking instead of passt (no --publish then)"),
    Option("--mem", "VM memory in whole GiB (default: 80% of the host's)", metavar="GIB"),
    Option(
        "--publish",
        "publish a port, passed to podman --publish (repeatable)",
        metavar="SPEC",
        short="-p",
        repeat=True,
    ),
    Option("--guest-init", "bind a host-built guest init over the image's", metavar="PATH"),
    # choices: libkrun.plan.TARGETS' keys (not imported at start-up; a unit test pins them)
    Option(
        "--target",
        "resize: the disk to grow, nix or containers",
        metavar="DISK",
        choices=("nix", "containers"),
    ),
    Option("--size", "resize: the new size, like 128 (GiB), 128G or 2TiB", metavar="SIZE"),
    Option("--force", "reset-nix: really delete the /nix disk"),
)
RUN_ONLY = ("publish",)  # resize's one-shot guest is a VM like a task, with no ports
VM = ("tsi", "mem", "guest_init")
RESIZE_ONLY = ("target", "size")


def _refuse_misplaced(ctx: Context) -> None:
    action = ctx.args.action
    given = set(ctx.args.values)
    wrong = {
        None: given & {*RESIZE_ONLY, "force"},
        "resize": given & {*RUN_ONLY, "force"},
        "reset-nix": given & {*RUN_ONLY, *VM, *RESIZE_ONLY},
    }[action]
    if wrong:
        flags = ", ".join(sorted("--" + w.replace("_", "-") for w in wrong))
        where = f"libkrun {action}" if action else "a libkrun run"
        raise UsageError(f"{flags} does not apply to {where}", hint="see 'agentbox libkrun --help'")


def run(ctx: Context) -> int:
    _refuse_misplaced(ctx)
    if ctx.args.action == "reset-nix":
        from agentbox_cli.libkrun.maintenance import reset_nix

        return reset_nix(ctx)
    if ctx.args.action == "resize":
        from agentbox_cli.libkrun.maintenance import resize

        return resize(ctx)
    return launch(ctx)


def check_host(ctx: Context, runner: Runner) -> None:
    """Can this host run a libkrun-mode VM (crun's krun handler, then a KVM that boots an
    ordinary guest kernel)? Asked before anything is created."""
    from agentbox_cli.libkrun.handler import DOCTOR_HINT, check_krun_handler
    from agentbox_krun import kvm

    with ctx.profiler.phase("krun_handler_check"):
        check_krun_handler(runner)
    with ctx.profiler.phase("kvm_check"):
        try:
            kvm.check(ctx.environ, "AGENTBOX_", "libkrun mode")
        except kvm.KvmUnavailableError as err:
            raise kvm.KvmUnavailableError(err.message, hint=f"{DOCTOR_HINT}; {err.hint}") from err


def launch(ctx: Context) -> int:
    from agentbox_cli.egress.policy import refuse_unenforced
    from agentbox_cli.imageref import resolve_image
    from agentbox_cli.libkrun.inputs import check_guest_init, host_facts, request
    from agentbox_cli.libkrun.plan import plan_libkrun
    from agentbox_cli.libkrun.task import run_task
    from agentbox_storage.disks import open_disk

    refuse_unenforced(ctx.config, verb="libkrun")
    workspace = ctx.mounted_workspace()
    runner = ctx.runner()
    agent_mounts: tuple[Mount, ...] = ()
    if ctx.flags.agent is not None:
        from agentbox_cli.agents.enter import enter

        workspace, agent_mounts = enter(ctx, workspace, runner)
    req = request(ctx, workspace, resolve_image(ctx.flags, runner), agent_mounts=agent_mounts)
    plan = plan_libkrun(req, host_facts(ctx, workspace))
    if ctx.flags.dry_run:
        ctx.out("\n".join(plan.describe()))
        return 0
    check_guest_init(req)
    check_host(ctx, runner)  # before anything is created
    for d in plan.host_dirs:
        d.mkdir(parents=True, exist_ok=True)
    (nix_spec, nix_path), (ctr_spec, ctr_path) = plan.disks
    with (
        ctx.profiler.phase("disks"),
        open_disk(nix_path, nix_spec, runner),
        open_disk(ctr_path, ctr_spec, runner),
        ctx.profiler.phase("task"),
    ):
        return run_task(runner, plan.run, notice=ctx.err)


LIBKRUN = Verb(
    "libkrun",
    "a shell (or -- CMD) in a libkrun microVM through Podman (the default mode)",
    run,
    OPTIONS,
    actions=("resize", "reset-nix"),
    action_required=False,
    runs_command=True,
    agent=True,
)
