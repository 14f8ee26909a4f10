"""Buildah: pure argv builders for the commands that open a local image's root filesystem, and
``BuildahImageSource``, which runs them to give a caller an image's digest and mounted rootfs.

``BuildahImageSource`` fits agentbox-storage's ``ImageSource`` protocol without importing it
(siblings stay independent); a layer above wires the two. Mounting an image rootlessly only
works inside ``buildah unshare``, so callers run it there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agentbox_podman.errors import PodmanError
from agentbox_state.errors import CommandError
from agentbox_state.runner import Runner

PULL_POLICIES = ("always", "missing", "never")


def from_image(ref: str, *, pull: str = "never") -> list[str]:
    if pull not in PULL_POLICIES:
        raise ValueError(f"pull policy {pull!r} is not one of {PULL_POLICIES}")
    return ["buildah", "from", f"--pull={pull}", "--quiet", ref]


def inspect_digest(container: str) -> list[str]:
    return ["buildah", "inspect", "--type", "container", "--format", "{{.FromImageDigest}}",
            container]  # fmt: skip


def mount(container: str) -> list[str]:
    return ["buildah", "mount", container]


def umount(container: str) -> list[str]:
    return ["buildah", "umount", container]


def rm(container: str) -> list[str]:
    return ["buildah", "rm", container]


def unshare(*argv: str) -> list[str]:
    """Run ``argv`` inside Buildah's rootless user namespace (identity mapping as root)."""
    return ["buildah", "unshare", *argv]


@dataclass(frozen=True, slots=True)
class OpenedImage:
    ref: str
    digest: str
    rootfs: Path
    container: str


class BuildahImageSource:
    """Opens a local image as a working container with its rootfs mounted."""

    def __init__(self, runner: Runner, *, pull: str = "never") -> None:
        self._runner = runner
        self._pull = pull

    @contextmanager
    def open(self, ref: str) -> Iterator[OpenedImage]:
        """``buildah from`` → digest → ``buildah mount``; always unmounts and removes the
        working container afterwards, whatever happened in between."""
        try:
            container = self._runner.run(from_image(ref, pull=self._pull)).stdout.strip()
        except CommandError as err:
            hint = "build it first (agentbox image build) or check the name: buildah images"
            raise PodmanError(f"cannot open image {ref}: {err.message}", hint=hint) from err
        try:
            digest = self._runner.run(inspect_digest(container)).stdout.strip()
            rootfs = Path(self._runner.run(mount(container)).stdout.strip())
            try:
                yield OpenedImage(ref, digest, rootfs, container)
            finally:
                self._runner.run(umount(container), check=False)
        finally:
            self._runner.run(rm(container), check=False)
