"""``agentbox kube [--format F] [--runtime-class NAME] [--workspace W] [--mem GIB] [-- CMD...]``:
the container-mode plan of the current project, as Kubernetes YAML on stdout."""

from __future__ import annotations

from agentbox_cli.kube import FORMATS, WORKSPACES
from agentbox_cli.schema import NETWORK_MODES
from agentbox_state.cli.app import Context, Verb
from agentbox_state.cli.args import Option

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agentbox_state.runner import Runner

DEFAULT_MEM_GIB = 4  # as microvm's --mem


def run(ctx: Context) -> int:
    """Facts (workspace, image, git remote) -> the container plan -> the objects -> YAML."""
    import os

    from agentbox_cli.container.plan import plan_container
    from agentbox_cli.container.verb import host_facts, network_policy, request_for
    from agentbox_cli.kube.render import KubeRequest, check_remote, render
    from agentbox_krun.sizing import parse_mem, vcpus
    from agentbox_state.errors import UsageError

    if network_policy(ctx).enforced:
        raise UsageError(
            "agentbox kube cannot carry a network policy: in a cluster, egress is the "
            "cluster's NetworkPolicy (a SandboxTemplate's networkPolicy), not agentbox's proxy",
            hint="pass --net open to render the sandbox without it, and restrict egress in "
            "the cluster",
        )
    if ctx.config.get("secrets.env") or ctx.config.get("secrets.files"):
        raise UsageError(
            "agentbox kube cannot carry [secrets]: only agentbox's proxy puts them in requests, "
            "and a cluster has none",
            hint="give the pod a Kubernetes Secret in the cluster, and move [secrets] out of "
            "the config file to render the sandbox",
        )
    fmt = ctx.args.value("format") or "pod"
    space = ctx.args.value("workspace") or ("hostpath" if fmt == "pod" else "pvc")
    mem = ctx.args.value("mem")
    workspace = ctx.mounted_workspace()
    runner = ctx.runner()
    remote = None
    if space == "git":
        remote = check_remote(_git_remote(runner, workspace.path))
    image = _image(ctx, runner)
    request = request_for(ctx, workspace, image)
    plan = plan_container(request, host_facts(ctx, workspace))
    kube = KubeRequest(
        format=fmt, workspace=space, name=f"agentbox-{workspace.key}", uid=os.getuid(),
        gid=os.getgid(), mem_gib=parse_mem(mem) if mem else DEFAULT_MEM_GIB,
        cpus=vcpus(os.cpu_count() or 1), runtime_class=ctx.args.value("runtime_class"),
        git_remote=remote,
    )  # fmt: skip
    ctx.out(to_yaml(render(plan, kube)))
    return 0


def to_yaml(docs: list[dict[str, object]]) -> str:
    """The documents as one YAML stream: keys in the order built, no anchors or aliases (each
    object stands alone for kubectl and ``podman kube play``), long strings on one line."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: object) -> bool:
            return True

    text = yaml.dump_all(docs, Dumper=Dumper, sort_keys=False, width=4096)
    return text.rstrip("\n")


def _image(ctx: Context, runner: Runner) -> str:
    """What the user named; else the local build when this machine has it (a local play),
    else the published image. Nothing is pulled: the cluster pulls."""
    from agentbox_podman import podman
    from agentbox_podman.images import LOCAL_IMAGE, PUBLISHED_IMAGE

    named = ctx.flags.image.value
    if isinstance(named, str):
        return named
    if ctx.flags.pull_latest:
        return PUBLISHED_IMAGE
    here = runner.run(podman.image_exists(LOCAL_IMAGE, debug=ctx.flags.debug), check=False)
    return LOCAL_IMAGE if here.returncode == 0 else PUBLISHED_IMAGE


def _git_remote(runner: Runner, path: str) -> str:
    """The URL of the project's ``origin`` (else its first remote), for ``--workspace git``."""
    from agentbox_state.errors import UsageError

    git = ["git", "-C", path]
    if runner.run([*git, "rev-parse", "--is-inside-work-tree"], check=False).returncode != 0:
        raise UsageError(
            f"--workspace git: {path} is not in a git repository",
            hint="use --workspace hostpath or --workspace pvc, or make it a repository with a "
            "remote the cluster can clone",
        )
    remotes = runner.run([*git, "remote"], check=False).stdout.split()
    if not remotes:
        raise UsageError(
            f"--workspace git: the repository at {path} has no remote to clone from",
            hint="add one the cluster can reach: git remote add origin URL",
        )
    name = "origin" if "origin" in remotes else remotes[0]
    return runner.run([*git, "remote", "get-url", name]).stdout.strip()


KUBE = Verb(
    "kube",
    "print the project's container-mode sandbox as Kubernetes YAML: a Pod, an agent-sandbox "
    "Sandbox or SandboxTemplate",
    run,
    options=(
        Option(
            "--format",
            "pod (with its PersistentVolumeClaims; the default), sandbox or template",
            metavar="FORMAT",
            choices=FORMATS,
        ),
        Option("--runtime-class", "the Pod's runtimeClassName (gvisor, kata, ...)", metavar="NAME"),
        Option(
            "--workspace",
            "the project as a hostPath (a local play; the default for pod), a claim (the "
            "default for sandbox and template) or cloned from its git remote",
            metavar="WHERE",
            choices=WORKSPACES,
        ),
        Option(
            "--mem", "the task's memory request and limit in whole GiB (default 4)", metavar="GIB"
        ),
        Option(
            "--net",
            "only open: a cluster's egress is its NetworkPolicy (overrides [network] mode)",
            metavar="MODE",
            choices=NETWORK_MODES,
        ),
    ),
    runs_command=True,
)
