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
