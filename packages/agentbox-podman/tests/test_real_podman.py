"""The builders and queries against real rootful Podman and Buildah (the podman-podman tier): a
tiny image made here from the host's own sleep and sh (no registry, no image build), a labelled
container running it, and every answer read back through the API socket and the CLI, with and
without --debug (the tools' debug logs go to stderr, so what is parsed stays the same)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox_podman import buildah, podman
from agentbox_podman.query import api_socket, containers_with_labels
from agentbox_state.runner import SubprocessRunner
from agentbox_testing import host_root, require, require_root

pytestmark = [pytest.mark.root, pytest.mark.podman]

RUNNER = SubprocessRunner(os.environ)
IMAGE = f"localhost/agentbox-podman-test:{os.getpid()}"
# This host's quirks (HOST-NOTES): crun cannot run here, and podman's default rlimits cannot be
# applied without CAP_SYS_RESOURCE.
LIMITS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_root("rootful Podman and Buildah storage")
    for tool in ("podman", "buildah"):
        require(shutil.which(tool) is not None, f"{tool} is missing (apt-get install {tool})")
    root = host_root(tmp_path_factory.mktemp("root") / "rootfs", "/bin/sleep", "/bin/sh")
    container = RUNNER.run(buildah.from_scratch()).stdout.strip()
    try:
        RUNNER.run(buildah.copy(container, str(root), "/"))
        RUNNER.run(buildah.commit(container, IMAGE))
    finally:
        RUNNER.run(buildah.rm(container), check=False)
    yield IMAGE
    RUNNER.run(["podman", "rmi", "--force", IMAGE], check=False)


@pytest.fixture
def running(image: str) -> Iterator[str]:
    name = f"agentbox-podman-test-{os.getpid()}"
    RUNNER.run(["podman", "run", "--detach", "--rm", *LIMITS, "--name", name,
                "--label", "agentbox.test=real-podman", "--entrypoint", "/bin/sleep", image,
                "60"])  # fmt: skip
    try:
        yield name
    finally:
        RUNNER.run(podman.remove(name), check=False)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    sock = tmp_path / "podman.sock"
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        environ = {"CONTAINER_HOST": f"unix://{sock}"}
        while time.monotonic() < deadline and api_socket(environ) is None:
            time.sleep(0.1)
        assert api_socket(environ) == str(sock)
        yield str(sock)
    finally:
        proc.terminate()
        proc.wait(30)


LABELS = [("agentbox.test", "real-podman")]
NOBODY = [("agentbox.test", "nobody-has-this")]


def test_the_api_and_the_cli_list_the_same_containers(running: str, service: str) -> None:
    assert containers_with_labels(LABELS, RUNNER, api=service) == [running]
    assert containers_with_labels(LABELS, RUNNER, api=None) == [running]
    assert containers_with_labels(LABELS, RUNNER, api=None, debug=True) == [running]
    assert containers_with_labels(NOBODY, RUNNER, api=service) == []
    assert containers_with_labels(NOBODY, RUNNER, api=None) == []


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_answers_parsed_from_stdout(running: str, image: str, debug: bool) -> None:
    exists = RUNNER.run(podman.image_exists(image, debug=debug), check=False)
    absent = RUNNER.run(podman.image_exists(f"{image}-absent", debug=debug), check=False)
    state = RUNNER.run(podman.container_state(running, debug=debug)).stdout.split()
    digest = buildah.local_image_digest(RUNNER, image, debug=debug)
    assert (exists.returncode, absent.returncode) == (0, 1)
    assert (state[0], state[3]) == ("true", image)
    assert digest == buildah.local_image_digest(RUNNER, image)
    assert (digest or "").startswith("sha256:")
    assert buildah.local_image_digest(RUNNER, f"{image}-absent", debug=debug) is None
    assert ("level=debug" in exists.stderr) is debug
