"""Podman: pure, typed builders for every podman command the modes issue.

Every builder takes ``debug``: agentbox's ``--debug`` becomes Podman's own global
``--log-level=debug`` (right after ``podman``, before the verb). Podman writes its log to
stderr, so what callers parse from stdout (``--format``, ``json``, exit codes) is the same.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROLE_LABEL = "agentbox.role"
WORKSPACE_LABEL = "agentbox.workspace"
SIDECAR_LABEL = "agentbox.sidecar"
EGRESS_LOG_LABEL = "agentbox.egress-log"  # a task under an allow-list: its denial log
DEBUG_LOG_LEVEL = "--log-level=debug"  # podman(1) and buildah(1): the global --log-level


def podman_argv(*, debug: bool = False) -> list[str]:
    """``podman`` and its global options: the start of every podman command line."""
    return ["podman", DEBUG_LOG_LEVEL] if debug else ["podman"]


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
    network: str | None = None  # podman-run(1) --network MODE: "none" leaves only loopback
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    tmpfs: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    debug: bool = False  # podman --log-level=debug run ...
    global_options: tuple[str, ...] = field(default=())  # any other, before "run"

    def argv(self) -> list[str]:
        argv = [*podman_argv(debug=self.debug), *self.global_options, "run"]
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
            ("--entrypoint", self.entrypoint), ("--network", self.network),
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


def image_exists(image: str, *, debug: bool = False) -> list[str]:
    """Exit 0 when the image is in local storage, 1 when not."""
    return [*podman_argv(debug=debug), "image", "exists", image]


def pull(image: str, *, debug: bool = False) -> list[str]:
    return [*podman_argv(debug=debug), "pull", "--quiet", image]


def container_state(name: str, *, debug: bool = False) -> list[str]:
    """Prints ``<running> <conmon pid> <id> <image name>``; fails when there is no container."""
    return [*podman_argv(debug=debug), "container", "inspect", "--format",
            "{{.State.Running}} {{.State.ConmonPid}} {{.Id}} {{.ImageName}}", name]  # fmt: skip


def remove(name: str, *, debug: bool = False) -> list[str]:
    return [*podman_argv(debug=debug), "rm", "--force", "--ignore", name]


def ps_json(
    labels: Sequence[tuple[str, str]], *, all_states: bool = False, debug: bool = False
) -> list[str]:
    argv = [*podman_argv(debug=debug), "ps", "--format", "json"]
    if all_states:
        argv.append("--all")
    for key, value in labels:
        argv += ["--filter", f"label={key}={value}"]
    return argv


def ps_ids(*, debug: bool = False) -> list[str]:
    """Prints the full id of every running container, one a line."""
    return [*podman_argv(debug=debug), "ps", "--quiet", "--no-trunc"]


def inspect_annotations(ids: Sequence[str], *, debug: bool = False) -> list[str]:
    """Prints ``<name> <annotations as JSON>`` for each container, one a line."""
    return [*podman_argv(debug=debug), "inspect", "--format",
            "{{.Name}} {{json .Config.Annotations}}", *ids]  # fmt: skip


def unshare(*argv: str, debug: bool = False) -> list[str]:
    """Run ``argv`` in rootless Podman's user and mount namespace (where its mounts live)."""
    return [*podman_argv(debug=debug), "unshare", *argv]


def info_graph_driver(*, debug: bool = False) -> list[str]:
    return [*podman_argv(debug=debug), "info", "--format", "{{.Store.GraphDriverName}}"]


def logs(name: str, tail: int = 20, *, debug: bool = False) -> list[str]:
    return [*podman_argv(debug=debug), "logs", "--tail", str(tail), name]


def port(name: str, *, debug: bool = False) -> list[str]:
    return [*podman_argv(debug=debug), "port", name]


def image_mount(image: str, *, debug: bool = False) -> list[str]:
    """Prints the mount point; rootless only inside ``podman unshare``."""
    return [*podman_argv(debug=debug), "image", "mount", image]


def image_unmount(image: str, *, debug: bool = False) -> list[str]:
    return [*podman_argv(debug=debug), "image", "unmount", image]


def tool_messages(stderr: str) -> list[str]:
    """The non-empty lines of a podman or buildah stderr without the debug, info and trace log
    records that ``--log-level=debug`` adds (``time="..." level=debug msg=...`` when stderr is
    not a terminal, ``DEBU[0000] ...`` when it is), which can bury the tool's own ``Error: ...``
    line. Warnings and errors are kept: they are printed without ``--debug`` too."""
    return [line for line in stderr.splitlines() if line.strip() and not _is_debug_record(line)]


_DEBUG_LEVELS = ("trace", "debug", "info")


def _is_debug_record(line: str) -> bool:
    if line.startswith('time="'):
        return any(f" level={level} " in line for level in _DEBUG_LEVELS)
    return line.startswith(("TRAC[", "DEBU[", "INFO["))
