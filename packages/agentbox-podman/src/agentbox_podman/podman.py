"""Podman: pure, typed builders for every podman command the modes issue."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROLE_LABEL = "agentbox.role"
WORKSPACE_LABEL = "agentbox.workspace"
SIDECAR_LABEL = "agentbox.sidecar"


@dataclass(frozen=True, slots=True)
class Mount:
    source: Path
    target: str
    readonly: bool = False

    def spec(self) -> str:
        return f"{os.fspath(self.source)}:{self.target}" + (":ro" if self.readonly else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    """One ``podman run``: every option the modes use, rendered in a fixed order."""

    image: str
    name: str
    command: tuple[str, ...] = ()
    detach: bool = False
    remove: bool = True
    interactive: bool = False
    tty: bool = False
    userns: str | None = None
    user: str | None = None
    hostname: str | None = None
    workdir: str | None = None
    entrypoint: str | None = None
    runtime: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    tmpfs: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    global_options: tuple[str, ...] = field(default=())  # before "run": --log-level=debug

    def argv(self) -> list[str]:
        argv = ["podman", *self.global_options, "run"]
        if self.remove:
            argv.append("--rm")
        if self.detach:
            argv.append("--detach")
        if self.interactive:
            argv.append("--interactive")
        if self.tty:
            argv.append("--tty")
        argv += ["--name", self.name]
        for flag, value in (
            ("--runtime", self.runtime), ("--userns", self.userns), ("--user", self.user),
            ("--hostname", self.hostname), ("--workdir", self.workdir),
            ("--entrypoint", self.entrypoint),
        ):  # fmt: skip
            if value is not None:
                argv += [flag, value]
        for key, value in self.labels:
            argv += ["--label", f"{key}={value}"]
        for key, value in self.annotations:
            argv += ["--annotation", f"{key}={value}"]
        for key, value in self.env:
            argv += ["--env", f"{key}={value}"]
        for mount in self.mounts:
            argv += ["--volume", mount.spec()]
        for spec in self.tmpfs:
            argv += ["--tmpfs", spec]
        for device in self.devices:
            argv += ["--device", device]
        for spec in self.publish:
            argv += ["--publish", spec]
        return [*argv, self.image, *self.command]


def image_exists(image: str) -> list[str]:
    """Exit 0 when the image is in local storage, 1 when not."""
    return ["podman", "image", "exists", image]


def pull(image: str) -> list[str]:
    return ["podman", "pull", "--quiet", image]


def container_state(name: str) -> list[str]:
    """Prints ``<running> <conmon pid> <id> <image name>``; fails when there is no container."""
    return ["podman", "container", "inspect", "--format",
            "{{.State.Running}} {{.State.ConmonPid}} {{.Id}} {{.ImageName}}", name]  # fmt: skip


def remove(name: str) -> list[str]:
    return ["podman", "rm", "--force", "--ignore", name]


def ps_json(labels: Sequence[tuple[str, str]], *, all_states: bool = False) -> list[str]:
    argv = ["podman", "ps", "--format", "json"]
    if all_states:
        argv.append("--all")
    for key, value in labels:
        argv += ["--filter", f"label={key}={value}"]
    return argv


def unshare(*argv: str) -> list[str]:
    """Run ``argv`` in rootless Podman's user and mount namespace (where its mounts live)."""
    return ["podman", "unshare", *argv]


def info_graph_driver() -> list[str]:
    return ["podman", "info", "--format", "{{.Store.GraphDriverName}}"]


def logs(name: str, tail: int = 20) -> list[str]:
    return ["podman", "logs", "--tail", str(tail), name]


def port(name: str) -> list[str]:
    return ["podman", "port", name]


def image_mount(image: str) -> list[str]:
    """Prints the mount point; rootless only inside ``podman unshare``."""
    return ["podman", "image", "mount", image]


def image_unmount(image: str) -> list[str]:
    return ["podman", "image", "unmount", image]
