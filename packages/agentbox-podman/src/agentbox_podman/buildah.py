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


def image_digest(ref: str) -> list[str]:
    """The digest of ``ref`` in local storage (no pull; no unshare needed, also rootless)."""
    return ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageDigest}}", ref]


def local_image_digest(runner: Runner, ref: str) -> str | None:
    """``ref``'s digest in local Buildah storage now, or None when it is not there. Any other
    failure (storage locked or broken, no buildah) is an error, never taken for absence."""
    done = runner.run(image_digest(ref), check=False)
    if done.returncode == 0 and done.stdout.strip().startswith("sha256:"):
        return done.stdout.strip()
    if "image not known" in done.stderr:
        return None
    raise PodmanError(
        f"buildah could not inspect image {ref} (exit status {done.returncode}): "
        + (done.stderr.strip().splitlines() or ["no output"])[-1],
        hint="check Buildah's storage: buildah images",
    )


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


# -- building images ----------------------------------------------------------------------------
def from_scratch() -> list[str]:
    return ["buildah", "from", "--quiet", "scratch"]


def add(container: str, source: str, dest: str = "/") -> list[str]:
    """Copy ``source`` into the container; a local tar archive is unpacked."""
    return ["buildah", "add", "--quiet", container, source, dest]


def copy(container: str, source: str, dest: str) -> list[str]:
    return ["buildah", "copy", "--quiet", container, source, dest]


def run(container: str, argv: list[str], *, isolation: str = "chroot") -> list[str]:
    """``buildah run`` with chroot isolation (no OCI runtime needed) and the host's network."""
    return ["buildah", "run", "--isolation", isolation, "--network", "host", container, "--",
            *argv]  # fmt: skip


def config(
    container: str,
    *,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    workingdir: str | None = None,
) -> list[str]:
    import json

    argv = ["buildah", "config"]
    if entrypoint is not None:
        argv += ["--entrypoint", json.dumps(entrypoint)]
    if cmd is not None:
        argv += ["--cmd", json.dumps(cmd)]
    for key, value in (env or {}).items():
        argv += ["--env", f"{key}={value}"]
    for key, value in (labels or {}).items():
        argv += ["--label", f"{key}={value}"]
    if workingdir is not None:
        argv += ["--workingdir", workingdir]
    return [*argv, container]


def commit(container: str, image: str) -> list[str]:
    """Commit and remove the working container."""
    return ["buildah", "commit", "--quiet", "--rm", container, image]


def image_label(image: str, label: str) -> list[str]:
    """Prints the label's value (empty when unset); fails when the image does not exist."""
    return ["buildah", "inspect", "--type", "image", "--format",
            f'{{{{index .OCIv1.Config.Labels "{label}"}}}}', image]  # fmt: skip


def tag(image: str, name: str) -> list[str]:
    return ["buildah", "tag", image, name]
