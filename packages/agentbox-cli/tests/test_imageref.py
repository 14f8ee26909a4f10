import pytest

from agentbox_cli.imageref import resolve_image
from agentbox_podman.errors import PodmanError
from agentbox_podman.images import LOCAL_IMAGE, PUBLISHED_IMAGE
from agentbox_state.cli.flags import GlobalFlags, Setting
from agentbox_state.testing import RecordingRunner

D = "--log-level=debug"


def flags(*, debug: bool, pull_latest: bool = False) -> GlobalFlags:
    return GlobalFlags(image=Setting(None, "default"), pull_latest=pull_latest, debug=debug,
                       profile=False, root=False, dry_run=False)  # fmt: skip


@pytest.mark.parametrize(("debug", "podman"), [(False, ["podman"]), (True, ["podman", D])],
                         ids=["plain", "debug"])  # fmt: skip
def test_lookups_and_pull_carry_debug(debug: bool, podman: list[str]) -> None:
    local = RecordingRunner()
    assert resolve_image(flags(debug=debug), local) == LOCAL_IMAGE
    assert local.argvs == [[*podman, "image", "exists", LOCAL_IMAGE]]

    published = RecordingRunner()
    published.script(*podman, "image", "exists", returncode=1)
    assert resolve_image(flags(debug=debug), published) == PUBLISHED_IMAGE
    assert published.argvs == [
        [*podman, "image", "exists", LOCAL_IMAGE],
        [*podman, "image", "exists", PUBLISHED_IMAGE],
        [*podman, "pull", "--quiet", PUBLISHED_IMAGE],
    ]

    latest = RecordingRunner()
    assert resolve_image(flags(debug=debug, pull_latest=True), latest) == PUBLISHED_IMAGE
    assert latest.argvs == [[*podman, "pull", "--quiet", PUBLISHED_IMAGE]]


def test_a_failed_pull_says_podmans_error_not_its_debug_records() -> None:
    rec = RecordingRunner()
    rec.script("podman", D, "pull", returncode=125, stderr=(
        'time="t" level=debug msg="Trying to access \\"ghcr.io/zeroqn/agentbox:latest\\""\n'
        "Error: initializing source docker://ghcr.io/zeroqn/agentbox:latest: no route\n"
        'time="t" level=debug msg="Shutting down engines"\n'
    ))  # fmt: skip
    with pytest.raises(PodmanError) as caught:
        resolve_image(flags(debug=True, pull_latest=True), rec)
    assert caught.value.message == (
        f"cannot pull {PUBLISHED_IMAGE}: Error: initializing source "
        "docker://ghcr.io/zeroqn/agentbox:latest: no route"
    )


@pytest.mark.parametrize(("image", "hint"), [
    (LOCAL_IMAGE, "build it on this machine: agentbox image build"),
    ("localhost/nosuch:1", "localhost/nosuch:1 can only come from this machine: build it, or "
     "`podman load` it, or name another with --image; agentbox's own: agentbox image build"),
    ("docker.io/library/debian:12", "get it with `podman pull` (or `podman load` from an "
     "archive) once its registry is reachable, or name another with --image; agentbox's own "
     "image: agentbox image build"),
])  # fmt: skip
def test_a_missing_image_that_cannot_be_pulled_is_named_with_how_to_get_it(
    image: str, hint: str
) -> None:
    from agentbox_cli.imageref import pull_missing

    rec = RecordingRunner()
    rec.script("podman", "pull", returncode=125, stderr=(
        f"Trying to pull {image}...\nError: initializing source docker://{image}: no route\n"
    ))  # fmt: skip
    with pytest.raises(PodmanError) as caught:
        pull_missing(image, rec, debug=False)
    assert caught.value.message == (
        f"image {image} is not in local storage, and pulling it failed: initializing source "
        f"docker://{image}: no route"
    )
    assert caught.value.hint == hint
    assert rec.argvs == [["podman", "pull", "--quiet", image]]


def test_the_lookup_can_be_the_callers_own() -> None:
    """Container mode answers "is it here?" with the inspect it needs anyway: no other call."""
    asked: list[str] = []

    def here(image: str) -> bool:
        asked.append(image)
        return image == PUBLISHED_IMAGE

    rec = RecordingRunner()
    assert resolve_image(flags(debug=False), rec, exists=here) == PUBLISHED_IMAGE
    assert (asked, rec.argvs) == ([LOCAL_IMAGE, PUBLISHED_IMAGE], [])
    assert resolve_image(flags(debug=False), rec, exists=lambda image: False) == PUBLISHED_IMAGE
    assert rec.argvs == [["podman", "pull", "--quiet", PUBLISHED_IMAGE]]
