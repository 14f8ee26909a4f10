from agentbox_podman.errors import PodmanError
from agentbox_podman.images import LOCAL_IMAGE, PUBLISHED_IMAGE
from agentbox_state.errors import AgentboxError, render_error


def test_image_names() -> None:
    # Interface facts: the locally built image and the published fallback.
    assert LOCAL_IMAGE == "localhost/agentbox:latest"
    assert PUBLISHED_IMAGE == "ghcr.io/zeroqn/agentbox:latest"


def test_podman_errors_share_the_root() -> None:
    err = PodmanError("image x not found", hint="run agentbox image build")
    assert isinstance(err, AgentboxError)
    assert render_error("agentbox", err) == (
        "agentbox: image x not found\nhint: run agentbox image build"
    )
