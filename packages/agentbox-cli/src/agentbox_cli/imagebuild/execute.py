"""Running a ``BuildPlan`` with Buildah: each stage is reused when an image with its key exists,
else built from the previous stage and committed; progress goes to stderr."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agentbox_cli.imagebuild.plan import KEY_LABEL, BuildPlan, Stage, stage_image, stage_key
from agentbox_podman import buildah
from agentbox_podman.errors import PodmanError
from agentbox_state.errors import AgentboxError, CommandError
from agentbox_state.runner import Runner


class ImageBuildError(AgentboxError):
    pass


def _exists_with_key(runner: Runner, image: str, key: str, *, debug: bool) -> bool:
    found = runner.run(buildah.image_label(image, KEY_LABEL, debug=debug), check=False)
    return found.returncode == 0 and found.stdout.strip() == key


def make_base(plan: BuildPlan, runner: Runner, *, is_root: bool) -> None:
    """debootstrap into a temporary dir next to the cache, tar it, rename into place."""
    if not is_root:
        raise ImageBuildError(
            f"no Debian base yet at {plan.base_tar}, and debootstrap needs root",
            hint="make it once as root, then rerun: sudo debootstrap --variant=minbase "
            f"{plan.debootstrap[2]} /tmp/agentbox-base {plan.debootstrap[4]} && sudo tar -C "
            f"/tmp/agentbox-base -cf {plan.base_tar} . && sudo chown $USER {plan.base_tar} "
            "(or pass --base-dir with a prepared rootfs tar)",
        )
    plan.base_tar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=plan.base_tar.parent, prefix=".debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        argv = [rootfs.as_posix() if a == "<dir>" else a for a in plan.debootstrap]
        runner.run(argv)
        partial = Path(tmp) / "base.tar"
        runner.run(["tar", "-C", os.fspath(rootfs), "-cf", os.fspath(partial), "."])
        os.replace(partial, plan.base_tar)
        runner.run(["rm", "-rf", os.fspath(rootfs)])


def _build_stage(stage: Stage, parent: str | None, base_tar: Path, runner: Runner,
                 key: str, *, debug: bool) -> str:  # fmt: skip
    image = stage_image(stage, key)
    d = debug
    from_argv = (buildah.from_scratch(debug=d) if parent is None
                 else buildah.from_image(parent, debug=d))  # fmt: skip
    container = runner.run(from_argv).stdout.strip()
    try:
        if parent is None:
            runner.run(buildah.add(container, os.fspath(base_tar), "/", debug=d))
        for source, dest in stage.copies:
            runner.run(buildah.copy(container, os.fspath(source), dest, debug=d))
        with tempfile.TemporaryDirectory() as tmp:
            for f in stage.files:
                local = Path(tmp) / f.path.strip("/").replace("/", "_")
                local.write_text(f.text)
                local.chmod(f.mode)
                runner.run(buildah.copy(container, os.fspath(local), f.path, debug=d))
        for cmd in stage.runs:
            runner.run(buildah.run(container, list(cmd), debug=d))
        cfg = stage.config
        labels = {**dict(cfg.labels if cfg else ()), KEY_LABEL: key}
        if cfg is None:
            runner.run(buildah.config(container, labels=labels, debug=d))
        else:
            runner.run(buildah.config(
                container, entrypoint=list(cfg.entrypoint), cmd=list(cfg.cmd),
                env=dict(cfg.env), labels=labels, workingdir=cfg.workingdir, debug=d,
            ))  # fmt: skip
        runner.run(buildah.commit(container, image, debug=d))
    except BaseException:
        runner.run(buildah.rm(container, debug=d), check=False)
        raise
    return image


def execute(
    plan: BuildPlan, runner: Runner, *, progress: Callable[[str], None], is_root: bool
) -> str:
    """Build (or reuse) every stage and tag the last as ``plan.tag``; returns its image name."""
    started = time.monotonic()
    total = len(plan.stages)
    if plan.base_from == "debootstrap" and not plan.base_tar.exists():
        progress(f"image build: making the Debian base with debootstrap into {plan.base_tar}")
        make_base(plan, runner, is_root=is_root)
    elif not plan.base_tar.exists():
        raise ImageBuildError(f"the base {plan.base_tar} does not exist",
                              hint="give --base-dir a rootfs tar that exists")  # fmt: skip
    key, parent = "", None
    for index, stage in enumerate(plan.stages, 1):
        t0 = time.monotonic()
        key = stage_key(key, stage)
        image = stage_image(stage, key)
        if _exists_with_key(runner, image, key, debug=plan.debug):
            status = "reused"
        else:
            try:
                _build_stage(stage, parent, plan.base_tar, runner, key, debug=plan.debug)
                status = "built"
            except (CommandError, PodmanError) as err:
                if stage.optional is None:
                    raise ImageBuildError(
                        f"image build stage {stage.name} failed: {err.message}",
                        hint="rerun with --debug to see every buildah command",
                    ) from err
                progress(f"image build: warning: stage {stage.name} skipped: {stage.optional} "
                         f"(it failed: {err.message})")  # fmt: skip
                key = stage_key(key, stage) + "-skipped"
                status = "skipped"
                image = parent or ""
        progress(f"image build [{index}/{total}] {stage.name}: {status} "
                 f"({time.monotonic() - t0:.1f} s)")  # fmt: skip
        parent = image
    assert parent is not None
    runner.run(buildah.tag(parent, plan.tag, debug=plan.debug))
    progress(f"image build: {plan.tag} ready ({time.monotonic() - started:.1f} s)")
    return plan.tag
