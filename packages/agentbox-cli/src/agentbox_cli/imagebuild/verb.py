"""``agentbox image build``: options, config, and the plan's execution."""

from __future__ import annotations

import os

from agentbox_state.cli.app import Context, Verb
from agentbox_state.cli.args import Option
from agentbox_state.paths import cache_dir

OPTIONS = (
    Option(
        "--tag", "name of the image to build (default localhost/agentbox:latest)", metavar="REF"
    ),
    Option(
        "--suite",
        "the Debian release: trixie (default; the workstation: Rust, sccache, mold, clang, "
        "starship, Nix with flakes) or bookworm (the smaller Debian 12 image)",
        metavar="NAME",
        # imagebuild.plan.SUITE_PACKAGES' keys (not imported at start-up; a unit test pins them)
        choices=("trixie", "bookworm"),
    ),
    Option(
        "--base-dir",
        "a prepared Debian rootfs (a tar archive) instead of debootstrap",
        metavar="TAR",
    ),
    Option(
        "--package",
        "an extra Debian package (repeatable; also [image].packages)",
        metavar="NAME",
        repeat=True,
    ),
    Option(
        "--npm", "an extra npm package (repeatable; also [image].npm)", metavar="NAME", repeat=True
    ),
)


HOST_CA_DIR = "/usr/local/share/ca-certificates"


def _words(ctx: Context, dest: str, key: str) -> tuple[str, ...]:
    from_config = ctx.config.get(key)
    from_flags = ctx.args.values.get(dest, ())
    configured = from_config if isinstance(from_config, tuple) else ()
    flags = from_flags if isinstance(from_flags, tuple) else ()
    return (*configured, *flags)


def run(ctx: Context) -> int:
    from pathlib import Path  # not at import: this module is on the start-up path

    import agentbox_guest_init
    from agentbox_cli.imagebuild.execute import ImageBuildError, execute
    from agentbox_cli.imagebuild.plan import (
        DEFAULT_SUITE,
        DEFAULT_TAG,
        SUITE_PACKAGES,
        BuildRequest,
        plan_build,
        tree_digest,
    )

    host_ca = Path(HOST_CA_DIR)
    base = ctx.args.value("base_dir")
    assert agentbox_guest_init.__file__ is not None
    source = Path(agentbox_guest_init.__file__).parent
    suite = ctx.args.value("suite") or DEFAULT_SUITE
    if suite not in SUITE_PACKAGES:
        raise ImageBuildError(f"--suite {suite} is not a Debian release this build knows",
                              hint=f"use one of: {', '.join(SUITE_PACKAGES)}")  # fmt: skip
    request = BuildRequest(
        tag=ctx.args.value("tag") or DEFAULT_TAG,
        suite=suite,
        base_dir=Path(base).absolute() if base else None,
        packages=_words(ctx, "package", "image.packages"),
        npm=_words(ctx, "npm", "image.npm"),
        cache_dir=Path(cache_dir("agentbox", ctx.environ)),
        guest_init_src=source,
        guest_init_version=agentbox_guest_init.__version__,
        host_ca_dir=host_ca if any(host_ca.glob("*.crt")) else None,
        host_ca_digest=tree_digest(host_ca) if host_ca.is_dir() else "",
        debug=ctx.flags.debug,
    )
    plan = plan_build(request, tree_digest(source))

    if ctx.flags.dry_run:
        ctx.out("\n".join(plan.describe()))
        return 0
    tag = execute(plan, ctx.runner(), progress=lambda m: ctx.err(f"agentbox: {m}"),
                  is_root=os.geteuid() == 0)  # fmt: skip
    ctx.out(tag)
    return 0


IMAGE = Verb(
    "image",
    "build the agentbox image locally with Buildah: image build [--tag REF] [--suite NAME] "
    "[--package NAME]...",
    run,
    OPTIONS,
    actions=("build",),
)
