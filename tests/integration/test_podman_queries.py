"""Structured queries against real Podman: through podman-py on a live API socket, and through
`podman ps --format json`; both must give the same answer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox_podman.errors import PodmanError
from agentbox_podman.query import api_socket, containers_with_labels
from agentbox_state.runner import SubprocessRunner
from agentbox_state.testing import require_root

RUNNER = SubprocessRunner(os.environ)
LIMITS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    require_root("root's podman service")
    sock = tmp_path / "podman.sock"
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline and api_socket({"CONTAINER_HOST": f"unix://{sock}"}) is None
        ):
            time.sleep(0.1)
        yield str(sock)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def labelled() -> Iterator[str]:
    name = f"agentbox-query-{os.getpid()}"
    subprocess.run(["podman", "run", "--detach", "--rm", *LIMITS, "--name", name,
                    "--label", "agentbox.test=query", "--label", f"agentbox.pid={os.getpid()}",
                    "--entrypoint", "sleep", "localhost/agentbox:latest", "60"],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield name
    finally:
        subprocess.run(["podman", "rm", "--force", name], check=False, capture_output=True)


def test_api_and_cli_agree(service: str, labelled: str) -> None:
    assert api_socket({"CONTAINER_HOST": f"unix://{service}"}) == service
    labels = [("agentbox.test", "query"), ("agentbox.pid", str(os.getpid()))]
    assert containers_with_labels(labels, RUNNER, api=service) == [labelled]
    assert containers_with_labels(labels, RUNNER, api=None) == [labelled]
    none = [("agentbox.test", "nobody-has-this")]
    assert containers_with_labels(none, RUNNER, api=service) == []
    assert containers_with_labels(none, RUNNER, api=None) == []


def test_no_socket_and_failures_are_reported(tmp_path: Path) -> None:
    assert api_socket({"CONTAINER_HOST": f"unix://{tmp_path}/absent.sock"}) is None
    broken = SubprocessRunner({"PATH": str(tmp_path)})  # no podman at all
    with pytest.raises(PodmanError, match="cannot list containers"):
        containers_with_labels([("a", "b")], broken, api=None)


def test_podman_py_stays_off_the_start_up_path() -> None:
    code = ("import sys; from agentbox_cli.main import main; main(['--help']); "
            "print('podman' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "False"


def test_vfs_driver_is_noticed_for_real(tmp_path: Path) -> None:
    require_root("a throwaway root storage config")
    from agentbox_cli.container.storage_check import VFS_FIX, vfs_warning

    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path}/graph"\n'
                    f'runroot = "{tmp_path}/run"\n')  # fmt: skip
    runner = SubprocessRunner({**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)})
    assert vfs_warning(runner, tmp_path / "warned") == VFS_FIX
    assert vfs_warning(RUNNER, tmp_path / "other") is None  # root's real storage: overlay
