"""``agentbox container [sidecar] [-- CMD...]``."""

from __future__ import annotations

import os

from agentbox_cli.schema import NETWORK_MODES
from agentbox_state.cli.app import Context, Verb
from agentbox_state.cli.args import Option

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agentbox_cli.container.plan import ContainerRequest, HostFacts
    from agentbox_cli.egress.policy import NetworkPolicy
    from agentbox_cli.egress.secrets import Secret
    from agentbox_podman.podman import Mount
    from agentbox_state.workspace import Workspace


def grace_seconds(ctx: Context) -> int:
    """``[container] sidecar_idle_grace`` (the config layer applies
    AGENTBOX_SIDECAR_IDLE_GRACE and reports a bad value)."""
    from agentbox_cli.container.plan import DEFAULT_GRACE

    configured = ctx.config.get("container.sidecar_idle_grace")
    return configured if isinstance(configured, int) else DEFAULT_GRACE


def network_policy(ctx: Context, secrets: tuple[Secret, ...] = ()) -> NetworkPolicy:
    """``[network]`` with ``--net`` and ``--allow`` (refused when they contradict); the hosts
    of ``secrets`` are allowed, and they need the proxy of ``allow``."""
    from agentbox_cli.egress.policy import build_policy
    from agentbox_state.errors import UsageError

    def listed(key: str) -> tuple[str, ...]:
        value = ctx.config.get(key)
        return value if isinstance(value, tuple) else ()

    flags = ctx.args.values.get("allow", ())
    configured = ctx.config.get("network.mode")
    mode = ctx.args.value("net")
    effective = mode or configured
    if secrets and (mode in ("none", "open") or effective == "none"):
        raise UsageError(
            f"a secret ({secrets[0].name}) needs the egress proxy, and the network mode is "
            f"{effective!r}",
            hint="use --net allow (a secret's hosts are allowed with it), or drop the secret",
        )
    extra = (*(flags if isinstance(flags, tuple) else ()), *(h for s in secrets for h in s.hosts))
    return build_policy(
        mode=mode, configured_mode=configured if isinstance(configured, str) else "open",
        allow=listed("network.allow"), extra_allow=extra, resolve=listed("network.resolve"),
    )  # fmt: skip


def request_for(ctx: Context, workspace: Workspace, image: str, *,
                network: NetworkPolicy | None = None, secrets: tuple[Secret, ...] = (),
                agent_mounts: tuple[Mount, ...] = ()) -> ContainerRequest:  # fmt: skip
    """The container request of ``workspace`` from the global flags and the config: what
    ``agentbox container`` runs and ``agentbox kube`` renders."""
    from agentbox_cli.container.plan import ContainerRequest
    from agentbox_cli.egress.policy import OPEN

    return ContainerRequest(
        image=image, workspace_key=workspace.key, slug=workspace.slug,
        hostname=workspace.hostname, task_name=workspace.task_name(),
        state_dir=ctx.paths.layout(workspace).state_dir, sccache=ctx.paths.sccache,
        command=ctx.args.command, root=ctx.flags.root, debug=ctx.flags.debug,
        grace=grace_seconds(ctx), profile=ctx.flags.profile, agent_mounts=agent_mounts,
        network=network or OPEN, secrets=secrets, ca_dir=ctx.paths.base / "egress-ca",
        nix_outside_policy=ctx.args.flag("nix_outside_policy")
        or ctx.config.get("network.nix_outside_policy") is True,
    )  # fmt: skip


def host_facts(ctx: Context, workspace: Workspace) -> HostFacts:
    from pathlib import Path

    from agentbox_cli.container.plan import HostFacts

    return HostFacts(
        uid=os.getuid(), gid=os.getgid(), home=Path(ctx.environ.get("HOME", "/")),
        cwd=Path(workspace.path), stdin_tty=os.isatty(0), stdout_tty=os.isatty(1),
    )  # fmt: skip


def run(ctx: Context) -> int:
    """Facts (workspace, image, host) -> the plan -> ``--dry-run`` prints it, else execute."""
    from agentbox_cli.container import execute, imagefacts, sidecar
    from agentbox_cli.container.plan import plan_container
    from agentbox_cli.imageref import resolve_image
    from agentbox_state.workspace import current_workspace

    # the sidecar alone shows no workspace; a task refuses one that holds the home directory
    workspace = current_workspace() if ctx.args.action == "sidecar" else ctx.mounted_workspace()
    from agentbox_cli.egress.secrets import gather

    def listed(values: object) -> tuple[str, ...]:
        return values if isinstance(values, tuple) else ()

    secrets = gather(
        flags=listed(ctx.args.values.get("secret")),
        flag_files=listed(ctx.args.values.get("secret_file")),
        configured=listed(ctx.config.get("secrets.env")),
        configured_files=listed(ctx.config.get("secrets.files")),
        environ=ctx.environ, workspace=workspace.path,
    )  # fmt: skip
    network = network_policy(ctx, secrets)  # bad input is refused before anything runs
    if ctx.args.flag("nix_outside_policy") and not network.enforced:
        from agentbox_state.errors import UsageError

        raise UsageError(
            "--nix-outside-policy goes with a network policy, and the network mode is 'open'",
            hint="the task has the project's Nix daemon already: drop the flag, or add "
            "--net allow or --net none",
        )
    runner = ctx.runner()
    agent_mounts: tuple[Mount, ...] = ()
    if ctx.flags.agent is not None:
        from agentbox_cli.agents.enter import enter

        workspace, agent_mounts = enter(ctx, workspace, runner)
    state_dir = ctx.paths.layout(workspace).state_dir
    state = sidecar.read_state(state_dir / "nix-sidecar.state")
    # the cold start's "is the image here?" is the inspect it needs anyway: asked once, and
    # remembered while Podman's image index is unchanged
    cache = None
    if not ctx.flags.dry_run:
        cache = imagefacts.FactsCache(
            runner, debug=ctx.flags.debug, known_index=state.get("store_index", ""),
            store=ctx.paths.base / "image-facts.json", environ=ctx.environ,
        )  # fmt: skip
    with ctx.profiler.phase("image_reference_resolution"):
        image = resolve_image(ctx.flags, runner, known=state.get("image"),
                              exists=cache.exists if cache is not None else None)  # fmt: skip
    request = request_for(ctx, workspace, image, network=network, secrets=secrets,
                          agent_mounts=agent_mounts)  # fmt: skip
    plan = plan_container(request, host_facts(ctx, workspace))
    if ctx.flags.dry_run:
        ctx.out("\n".join(plan.describe()))
        return 0
    marker = ctx.paths.base / "vfs-warned"
    if ctx.args.action == "sidecar":
        return execute.start_sidecar(plan.sidecar, runner, cache=cache, vfs_marker=marker,
                                     out=ctx.out, err=ctx.err)  # fmt: skip
    return execute.run_task(plan, runner, cache=cache, vfs_marker=marker,
                            profiler=ctx.profiler, err=ctx.err)  # fmt: skip


CONTAINER = Verb(
    "container",
    "a shell (or -- CMD) in a rootless Podman container with a shared Nix daemon sidecar",
    run,
    options=(
        Option(
            "--net",
            "the task's network: open (the default unless [network] mode says), "
            "none, or allow (only the allowed hosts, through agentbox's proxy)",
            metavar="MODE",
            choices=NETWORK_MODES,
        ),
        Option(
            "--allow",
            "a host the task may reach, like github.com or *.npmjs.org "
            "(repeatable; adds to [network] allow; alone it means --net allow)",
            metavar="HOST",
            repeat=True,
        ),
        Option(
            "--secret",
            "NAME@HOST[,HOST...]: the task sees a placeholder in $NAME, and the proxy puts the "
            "value of your $NAME into requests to those hosts (repeatable; implies --net allow)",
            metavar="SPEC",
            repeat=True,
        ),
        Option(
            "--nix-outside-policy",
            "under --net none or allow, give the task the project's Nix daemon anyway: it "
            "fetches with the host's network, outside the policy ([network] nix_outside_policy)",
        ),
        Option(
            "--secret-file",
            "NAME@HOST[,HOST...]=PATH: as --secret, the value being the text of the file PATH "
            "(outside the project; repeatable)",
            metavar="SPEC",
            repeat=True,
        ),
    ),
    actions=("sidecar",),
    action_required=False,
    runs_command=True,
    agent=True,
)
