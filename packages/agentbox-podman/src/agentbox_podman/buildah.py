"""Buildah: pure argv builders for the commands that open a local image's root filesystem, and
``BuildahImageSource``, which runs them to give a caller an image's digest and mounted rootfs.

``BuildahImageSource`` fits agentbox-storage's ``ImageSource`` protocol without importing it
(siblings stay independent); a layer above wires the two. Mounting an image rootlessly only
works inside ``buildah unshare``, so callers run it there.

Every builder takes ``debug``: agentbox's ``--debug`` becomes Buildah's own global
``--log-level=debug`` (buildah(1): ``--log-level value``; the ``=`` form is the same option),
right after ``buildah``. Buildah logs to stderr, so the parsed stdout is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agentbox_podman.errors import PodmanError
from agentbox_podman.podman import DEBUG_LOG_LEVEL, tool_messages
from agentbox_state.errors import CommandError
from agentbox_state.runner import Runner

PULL_POLICIES = ("always", "missing", "never")


def buildah_argv(*, debug: bool = False) -> list[str]:
    """``buildah`` and its global options: the start of every buildah command line."""
    return ["buildah", DEBUG_LOG_LEVEL] if debug else ["buildah"]


def from_image(ref: str, *, pull: str = "never", debug: bool = False) -> list[str]:
    if pull not in PULL_POLICIES:
        raise ValueError(f"pull policy {pull!r} is not one of {PULL_POLICIES}")
    return [*buildah_argv(debug=debug), "from", f"--pull={pull}", "--quiet", ref]


def image_digest(ref: str, *, debug: bool = False) -> list[str]:
    """The digest of ``ref`` in local storage (no pull; no unshare needed, also rootless)."""
    return [*buildah_argv(debug=debug), "inspect", "--type", "image", "--format",
            "{{.FromImageDigest}}", ref]  # fmt: skip


def local_image_digest(runner: Runner, ref: str, *, debug: bool = False) -> str | None:
    """``ref``'s digest in local Buildah storage now, or None when it is not there. Any other
    failure (storage locked or broken, no buildah) is an error, never taken for absence."""
    done = runner.run(image_digest(ref, debug=debug), check=False)
    if done.returncode == 0 and done.stdout.strip().startswith("sha256:"):
        return done.stdout.strip()
    said = tool_messages(done.stderr)  # without the records --log-level=debug adds
    if any("image not known" in line for line in said):
        return None
    raise PodmanError(
        f"buildah could not inspect image {ref} (exit status {done.returncode}): "
        + (said or ["no output"])[-1],
        hint="check Buildah's storage: buildah images",
    )


def inspect_digest(container: str, *, debug: bool = False) -> list[str]:
    return [*buildah_argv(debug=debug), "inspect", "--type", "container", "--format",
            "{{.FromImageDigest}}", container]  # fmt: skip


def mount(container: str, *, debug: bool = False) -> list[str]:
    return [*buildah_argv(debug=debug), "mount", container]


def umount(container: str, *, debug: bool = False) -> list[str]:
    return [*buildah_argv(debug=debug), "umount", container]


def rm(container: str, *, debug: bool = False) -> list[str]:
    return [*buildah_argv(debug=debug), "rm", container]


def unshare(*argv: str, debug: bool = False) -> list[str]:
    """Run ``argv`` inside Buildah's rootless user namespace (identity mapping as root).
    ``unshare(debug=...)`` alone is the prefix for commands a caller appends later."""
    return [*buildah_argv(debug=debug), "unshare", *argv]


@dataclass(frozen=True, slots=True)
class OpenedImage:
    ref: str
    digest: str
    rootfs: Path
    container: str


class BuildahImageSource:
    """Opens a local image as a working container with its rootfs mounted."""

    def __init__(self, runner: Runner, *, pull: str = "never", debug: bool = False) -> None:
        self._runner = runner
        self._pull = pull
        self._debug = debug

    @contextmanager
    def open(self, ref: str) -> Iterator[OpenedImage]:
        """``buildah from`` → digest → ``buildah mount``; always unmounts and removes the
        working container afterwards, whatever happened in between."""
        call, debug = self._runner.run, self._debug
        try:
            container = call(from_image(ref, pull=self._pull, debug=debug)).stdout.strip()
        except CommandError as err:
            hint = "build it first (agentbox image build) or check the name: buildah images"
            raise PodmanError(f"cannot open image {ref}: {err.message}", hint=hint) from err
        try:
            digest = call(inspect_digest(container, debug=debug)).stdout.strip()
            rootfs = Path(call(mount(container, debug=debug)).stdout.strip())
            try:
                yield OpenedImage(ref, digest, rootfs, container)
            finally:
                call(umount(container, debug=debug), check=False)
        finally:
            call(rm(container, debug=debug), check=False)


# -- building images ----------------------------------------------------------------------------
def from_scratch(*, debug: bool = False) -> list[str]:
    return [*buildah_argv(debug=debug), "from", "--quiet", "scratch"]


def add(container: str, source: str, dest: str = "/", *, debug: bool = False) -> list[str]:
    """Copy ``source`` into the container; a local tar archive is unpacked."""
    return [*buildah_argv(debug=debug), "add", "--quiet", container, source, dest]


def copy(container: str, source: str, dest: str, *, debug: bool = False) -> list[str]:
    return [*buildah_argv(debug=debug), "copy", "--quiet", container, source, dest]


def run(
    container: str, argv: list[str], *, isolation: str = "chroot", debug: bool = False
) -> list[str]:
    """``buildah run`` with chroot isolation (no OCI runtime needed) and the host's network."""
    return [*buildah_argv(debug=debug), "run", "--isolation", isolation, "--network", "host",
            container, "--", *argv]  # fmt: skip


def config(
    container: str,
    *,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    workingdir: str | None = None,
    debug: bool = False,
) -> list[str]:
    import json

    argv = [*buildah_argv(debug=debug), "config"]
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


def commit(container: str, image: str, *, debug: bool = False) -> list[str]:
    """Commit and remove the working container."""
    return [*buildah_argv(debug=debug), "commit", "--quiet", "--rm", container, image]


def image_label(image: str, label: str, *, debug: bool = False) -> list[str]:
    """Prints the label's value (empty when unset); fails when the image does not exist."""
    return [*buildah_argv(debug=debug), "inspect", "--type", "image", "--format",
            f'{{{{index .OCIv1.Config.Labels "{label}"}}}}', image]  # fmt: skip


def tag(image: str, name: str, *, debug: bool = False) -> list[str]:
    return [*buildah_argv(debug=debug), "tag", image, name]
