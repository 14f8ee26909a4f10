"""``agentbox libkrun resize`` and ``agentbox libkrun reset-nix``: the persistent disks' care.

Both refuse while a running container has the disk attached (its ``krun.disk.*.path``
annotation), and fail closed when Podman cannot be asked. Nothing changes before every check
has passed; the resize never shrinks, and a failed in-guest step is retried by rerunning."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from agentbox_cli.libkrun.disks import LIBKRUN_NIX
from agentbox_cli.libkrun.plan import TARGETS
from agentbox_podman import podman
from agentbox_podman.errors import PodmanError
from agentbox_state.cli.app import Context
from agentbox_state.errors import CommandError, UsageError
from agentbox_state.parse import format_size, parse_disk_size
from agentbox_state.runner import Runner
from agentbox_state.workspace import Workspace, current_workspace
from agentbox_storage import disks
from agentbox_storage.disks import DiskSpec


def containers_using(path: Path, runner: Runner, *, debug: bool = False) -> list[str]:
    """Names of running containers that attach ``path`` as a krun disk (fail closed)."""
    try:
        ids = runner.run(podman.ps_ids(debug=debug)).stdout.split()
        if not ids:
            return []
        out = runner.run(podman.inspect_annotations(ids, debug=debug)).stdout
    except CommandError as err:
        raise PodmanError(
            f"cannot check whether a running container uses {path}: {err.message}",
            hint="make sure `podman ps` works, then retry; nothing was changed",
        ) from err
    users = []
    for line in out.splitlines():
        name, _, annotations = line.partition(" ")
        values = json.loads(annotations or "{}") or {}
        if any(k.startswith("krun.disk.") and k.endswith(".path") and v == os.fspath(path)
               for k, v in values.items()):  # fmt: skip
            users.append(name)
    return users


def _workspace(ctx: Context) -> Workspace:
    """The project's, or with ``--agent NAME`` that agent's (its disks are its own)."""
    from agentbox_cli.agents.enter import existing

    return existing(ctx, current_workspace())


def _disk(ctx: Context, spec: DiskSpec) -> Path:
    return ctx.paths.layout(_workspace(ctx)).disk(spec.file_name)


def _refuse_if_used(path: Path, runner: Runner, *, debug: bool) -> None:
    users = containers_using(path, runner, debug=debug)
    if users:
        raise PodmanError(
            f"{path} is attached to the running container {', '.join(users)}; nothing was changed",
            hint="exit that agentbox session first",
        )


def require_local_image(image: str, runner: Runner, *, debug: bool = False) -> None:
    """The one-shot guest's image must be in local storage before the disk grows: a pull
    failing inside `podman run` would leave a grown file with a filesystem that is not."""
    if runner.run(podman.image_exists(image, debug=debug), check=False).returncode != 0:
        raise PodmanError(
            f"image {image} is not in local storage; nothing was changed",
            hint=f"build it (agentbox image build) or pull it (podman pull {image}), then retry",
        )


def resize(ctx: Context) -> int:
    from agentbox_cli.imageref import resolve_image
    from agentbox_cli.libkrun.inputs import check_guest_init, host_facts, request
    from agentbox_cli.libkrun.plan import plan_resize
    from agentbox_cli.libkrun.task import VmStoppedError, run_task
    from agentbox_cli.libkrun.verb import check_host

    target, size = ctx.args.value("target"), ctx.args.value("size")
    if target not in TARGETS:
        raise UsageError(f"--target {target!r} is not nix or containers" if target else
                         "libkrun resize needs --target nix|containers")  # fmt: skip
    if size is None:
        raise UsageError("libkrun resize needs --size SIZE", hint="for example --size 128G")
    new_size = parse_disk_size(size, what="--size")
    workspace = _workspace(ctx)
    path = ctx.paths.layout(workspace).disk(TARGETS[target].file_name)
    runner = ctx.runner()
    current = disks.check_disk(path, runner)
    if new_size <= current:
        disks.grow_disk(path, new_size, runner)  # raises the grow-only refusal
    _refuse_if_used(path, runner, debug=ctx.flags.debug)
    if not ctx.flags.dry_run:
        check_host(ctx, runner)  # crun's krun handler and KVM: the filesystem grows in a VM
    image = resolve_image(ctx.flags, runner)
    require_local_image(image, runner, debug=ctx.flags.debug)
    req = request(ctx, workspace, image)
    guest = plan_resize(req, host_facts(ctx, workspace), target)
    if ctx.flags.dry_run:
        ctx.out(f"grow {path} from {format_size(current)} to {format_size(new_size)} (sparse)\n"
                + shlex.join(guest.argv()))  # fmt: skip
        return 0
    check_guest_init(req)
    lease = disks.lease(path)
    lease.acquire()
    try:
        old, new = disks.grow_disk(path, new_size, runner)
        ctx.err(f"agentbox: {path} grew from {format_size(old)} to {format_size(new)}; "
                "growing its filesystem in a one-shot guest")  # fmt: skip
        status = run_task(runner, guest, notice=ctx.err)
    except VmStoppedError as err:
        raise VmStoppedError(f"{err.message}; the disk file grew, its filesystem did not",
                             hint=f"rerun the same command to finish the resize; {err.hint}",
                             ) from err  # fmt: skip
    finally:
        lease.release()
    if status != 0:
        raise PodmanError(
            f"the disk file grew, but growing the filesystem inside failed (exit {status})",
            hint="rerun the same command: it is safe to retry and finishes the resize",
            exit_code=status,
        )
    return 0


def reset_nix(ctx: Context) -> int:
    if not ctx.args.flag("force"):  # before any probing or file access
        raise UsageError(
            "libkrun reset-nix deletes the /nix disk of this project (every store path built "
            "or downloaded in it); refusing without --force",
            hint="add --force if that is what you want",
        )
    path = _disk(ctx, LIBKRUN_NIX)
    runner = ctx.runner()
    _refuse_if_used(path, runner, debug=ctx.flags.debug)
    if ctx.flags.dry_run:
        ctx.out(f"replace {path} with a fresh sparse {format_size(LIBKRUN_NIX.default_size)} "
                f"btrfs disk (label {LIBKRUN_NIX.label})")  # fmt: skip
        return 0
    lease = disks.lease(path)
    lease.acquire()
    try:
        fresh = disks.reset_disk(path, LIBKRUN_NIX, runner, force=True)
    finally:
        lease.release()
    ctx.err(f"agentbox: {path} is a fresh {format_size(fresh.size)} /nix disk")
    return 0
