"""Which image a mode runs: exactly what the user named, else the local build, else the
published image (which is pulled, and fails clearly where no registry is reachable)."""

from __future__ import annotations

from collections.abc import Callable

from agentbox_podman import podman
from agentbox_podman.errors import PodmanError
from agentbox_podman.images import LOCAL_IMAGE, PUBLISHED_IMAGE
from agentbox_state.cli.flags import GlobalFlags
from agentbox_state.errors import CommandError
from agentbox_state.runner import Runner

BUILD_HINT = "build it on this machine: agentbox image build"
MISSING_HINT = (
    "get it with `podman pull` (or `podman load` from an archive) once its registry is "
    "reachable, or name another with --image; agentbox's own image: agentbox image build"
)


def _pull(image: str, runner: Runner, *, debug: bool) -> None:
    try:
        runner.run(podman.pull(image, debug=debug))
    except CommandError as err:
        said = "\n".join(podman.tool_messages(err.stderr_tail))  # without --debug's records
        raise PodmanError(f"cannot pull {image}: {said or err.message}",
                          hint=BUILD_HINT) from err  # fmt: skip


def pull_missing(image: str, runner: Runner, *, debug: bool) -> None:
    """Pull ``image``, which is not in local storage (as ``podman run`` would); when that
    fails, one line says which image is missing and how to get it."""
    try:
        runner.run(podman.pull(image, debug=debug))
    except CommandError as err:
        said = [line for line in podman.tool_messages(err.stderr_tail) if line.strip()]
        errors = [line for line in said if line.startswith("Error:")] or said
        why = errors[-1].removeprefix("Error: ") if errors else err.message
        if image == LOCAL_IMAGE:
            hint = BUILD_HINT
        elif image.startswith("localhost/"):
            hint = (
                f"{image} can only come from this machine: build it, or `podman load` it, "
                f"or name another with --image; agentbox's own: agentbox image build"
            )
        else:
            hint = MISSING_HINT
        raise PodmanError(
            f"image {image} is not in local storage, and pulling it failed: {why}", hint=hint
        ) from err


def resolve_image(flags: GlobalFlags, runner: Runner, *, known: str | None = None,
                  exists: Callable[[str], bool] | None = None) -> str:  # fmt: skip
    """The image reference to run. ``known`` is what a running sidecar already proves exists
    (skips the lookup on the hot path); ``exists`` answers "is it in local storage?" (default
    ``podman image exists``; container mode asks the inspect it needs anyway).
    ``flags.debug`` is Podman's ``--log-level=debug``."""
    debug = flags.debug
    if isinstance(flags.image.value, str):
        return flags.image.value
    if flags.pull_latest:
        _pull(PUBLISHED_IMAGE, runner, debug=debug)
        return PUBLISHED_IMAGE
    if known == LOCAL_IMAGE:
        return LOCAL_IMAGE

    def here(image: str) -> bool:
        if exists is not None:
            return exists(image)
        return runner.run(podman.image_exists(image, debug=debug), check=False).returncode == 0

    if here(LOCAL_IMAGE):
        return LOCAL_IMAGE
    if not here(PUBLISHED_IMAGE):
        _pull(PUBLISHED_IMAGE, runner, debug=debug)
    return PUBLISHED_IMAGE
