"""Structured queries against real Podman: through podman-py on a live API socket, and through
`podman ps --format json`; both must give the same answer."""

from __future__ import annotations

import json
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
from agentbox_testing import require_root, run_as_user

pytestmark = [pytest.mark.root, pytest.mark.podman, pytest.mark.image]

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
    """The driver container mode's one-time warning reads is what the cold start's real
    ``podman image inspect`` says, for an image in a vfs storage and one in root's overlay."""
    require_root("a throwaway root storage config")
    from agentbox_cli.container.imagefacts import FactsCache
    from agentbox_cli.container.storage_check import VFS_FIX, vfs_warning

    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path}/graph"\n'
                    f'runroot = "{tmp_path}/run"\n')  # fmt: skip
    runner = SubprocessRunner({**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)})
    empty = tmp_path / "empty.tar"
    subprocess.run(["tar", "-cf", str(empty), "-T", "/dev/null"], check=True)
    runner.run(["podman", "import", "--quiet", str(empty), "localhost/agentbox-vfs-probe:1"])
    cache = FactsCache(runner, debug=False)
    assert cache.exists("localhost/agentbox-vfs-probe:1")
    assert not cache.exists("localhost/agentbox-no-such-image:1")
    driver = cache.found["localhost/agentbox-vfs-probe:1"].driver
    assert (driver, vfs_warning(driver, tmp_path / "warned")) == ("vfs", VFS_FIX)
    probe = "localhost/agentbox-overlay-probe:1"  # in root's real storage: overlay
    RUNNER.run(["podman", "import", "--quiet", str(empty), probe])
    try:
        ours = FactsCache(RUNNER, debug=False).facts(probe)
    finally:
        RUNNER.run(["podman", "rmi", "--force", probe], check=False)
    assert (ours.driver, vfs_warning(ours.driver, tmp_path / "other")) == ("overlay", None)


# With --debug every podman/buildah call carries the tool's own --log-level=debug; its log goes
# to stderr, and these are the calls whose stdout or exit status agentbox reads. Run through the
# real builders and parsers, as root and as the ordinary test user.
DEBUG_PROBE = r"""
import json, os, subprocess, sys
from agentbox_podman import buildah, podman
from agentbox_podman.query import containers_with_labels
from agentbox_state.runner import SubprocessRunner

image, name, label, limits = IMAGE, NAME, LABEL, LIMITS
runner = SubprocessRunner(os.environ)
started = subprocess.run(["podman", "run", "--detach", "--rm", *limits, "--name", name,
                          "--label", f"agentbox.test={label}", "--entrypoint", "sleep", image,
                          "60"], capture_output=True, text=True)
assert started.returncode == 0, started.stderr
try:
    exists = runner.run(podman.image_exists(image, debug=True), check=False)
    absent = runner.run(podman.image_exists("localhost/agentbox-nope:x", debug=True), check=False)
    state = runner.run(podman.container_state(name, debug=True))
    names = containers_with_labels([("agentbox.test", label)], runner, api=None, debug=True)
    digest = buildah.local_image_digest(runner, image, debug=True)
    plain = buildah.local_image_digest(runner, image)
    missing = buildah.local_image_digest(runner, "localhost/agentbox-nope:x", debug=True)
finally:
    subprocess.run(["podman", "rm", "--force", name], capture_output=True)
print(json.dumps({
    "exists": exists.returncode, "absent": absent.returncode,
    "debug_logged": all("level=debug" in d.stderr for d in (exists, absent, state)),
    "state": state.stdout.split()[::3], "names": names,
    "digest": digest == plain and (digest or "").startswith("sha256:"), "missing": missing,
}))
"""


def _debug_probe(name: str) -> str:
    return (DEBUG_PROBE.replace("IMAGE", repr("localhost/agentbox:latest"))
            .replace("NAME", repr(name)).replace("LABEL", repr(name))
            .replace("LIMITS", repr(LIMITS)))  # fmt: skip


@pytest.mark.parametrize("who", ["root", "user"])
def test_stdout_parsing_survives_debug_logging(who: str, user_image: str) -> None:
    name = f"agentbox-debug-{who}-{os.getpid()}"
    if who == "root":
        done = subprocess.run([sys.executable, "-c", _debug_probe(name)], capture_output=True,
                              text=True, check=False, timeout=300)  # fmt: skip
    else:  # from a dir the user can enter (pytest's tmp_path is under root's 0700 dir)
        done = run_as_user(_debug_probe(name), packages=["agentbox_state", "agentbox_podman"],
                           cwd="/tmp")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "exists": 0, "absent": 1, "debug_logged": True,
        "state": ["true", "localhost/agentbox:latest"], "names": [name],
        "digest": True, "missing": None,
    }  # fmt: skip
