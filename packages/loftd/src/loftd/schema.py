"""The ``loftd`` application: its name, environment and what ``loftd.toml`` may contain."""

from __future__ import annotations

from agentbox_state.cli.app import AppSpec
from agentbox_state.config import STATE_TABLE, Invalid, Key, string
from loftd import __version__

LOCAL_IMAGE = "localhost/loftd:latest"
PUBLISHED_IMAGE = "ghcr.io/zeroqn/loftd:latest"
# The task root backends loftd offers (agentbox_storage.backends.Backend values; the storage
# module, and its enum, is imported only when a config file names one).
BACKENDS = ("btrfs-snapshot", "fuse-overlay")


def _backend(value: object) -> str:
    from agentbox_storage.backends import Backend, parse_backend
    from agentbox_storage.errors import StorageError

    try:
        return parse_backend(string(value), allowed=tuple(map(Backend, BACKENDS))).value
    except StorageError as err:
        raise Invalid("is not a loftd task root backend", err.hint) from None


SPEC = AppSpec(
    name="loftd",
    version=__version__,
    description="loftd: run a task in a direct-libkrun microVM with the current directory at "
    "/workspace.",
    image_env="LOFTD_IMAGE",
    default_verb="run",
    default_image=f"{LOCAL_IMAGE} when present, else {PUBLISHED_IMAGE}",
    schema={
        "state": STATE_TABLE,
        "task-rootfs": {
            "backend": Key(
                accepted=" or ".join(f'"{b}"' for b in BACKENDS),
                convert=_backend,
                default=BACKENDS[0],
            ),
        },
    },
)
