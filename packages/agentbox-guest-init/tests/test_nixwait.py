import os
import socket
import subprocess
import threading
import time
from pathlib import Path

from agentbox_guest_init import contract, nixwait


def real_tools(tmp_path: Path, *names: str) -> Path:
    real = tmp_path / "real"
    real.mkdir()
    for name in names:
        tool = real / name
        tool.write_text(f'#!/bin/sh\necho "real {name} $*"\n')
        tool.chmod(0o755)
    return real


def test_the_clients_wait_for_the_socket_then_run_the_real_command(tmp_path: Path) -> None:
    real = real_tools(tmp_path, "nix-store", "nix", "nix-daemon")
    sock = tmp_path / "socket"
    wait_bin = nixwait.install(str(real), str(sock), root=str(tmp_path))
    assert wait_bin == "/run/agentbox/nix-wait/bin"
    bin_dir = tmp_path / "run/agentbox/nix-wait/bin"
    assert sorted(os.listdir(bin_dir)) == ["nix", "nix-store"]  # no daemon; only what exists
    assert os.readlink(bin_dir / "nix-store") == "../wait-for-daemon"

    listener = socket.socket(socket.AF_UNIX)

    def serve_later() -> None:
        time.sleep(0.5)
        listener.bind(str(sock))

    threading.Thread(target=serve_later).start()
    begun = time.monotonic()
    done = subprocess.run(["nix-store", "--add", "x y"], capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:{real}:/usr/bin:/bin"}, check=False)  # fmt: skip
    listener.close()
    assert (done.returncode, done.stdout, done.stderr) == (0, "real nix-store --add x y\n", "")
    assert time.monotonic() - begun >= 0.4
    # once the socket is there, no wait
    path = {"PATH": f"{bin_dir}:{real}:/usr/bin:/bin"}
    again = subprocess.run(["nix", "--version"], capture_output=True, text=True, env=path,
                           check=False)  # fmt: skip
    assert again.stdout == "real nix --version\n"


def test_a_daemon_that_never_comes_is_said_within_the_bound(tmp_path: Path) -> None:
    real = real_tools(tmp_path, "nix-build")
    sock = tmp_path / "socket"
    nixwait.install(str(real), str(sock), root=str(tmp_path), seconds=1)
    bin_dir = tmp_path / "run/agentbox/nix-wait/bin"
    begun = time.monotonic()
    done = subprocess.run(["nix-build"], capture_output=True, text=True, check=False,
                          env={"PATH": f"{bin_dir}:{real}:/usr/bin:/bin"})  # fmt: skip
    assert time.monotonic() - begun < 5
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"agentbox: the Nix daemon did not open {sock} within 1 s, so nix-build cannot run; on "
        "the host, `agentbox container sidecar` starts the project's Nix sidecar without "
        "waiting and says where to look (podman logs)\n"
    )


def test_without_clients_nothing_is_written(tmp_path: Path) -> None:
    assert nixwait.install(str(tmp_path / "none"), "/x", root=str(tmp_path)) is None
    assert list(tmp_path.iterdir()) == []


def test_the_contract_says_when_the_daemon_may_still_be_starting() -> None:
    assert contract.parse({}).nix_daemon_starting is False
    assert contract.parse({"AGENTBOX_NIX_DAEMON_STARTING": "1"}).nix_daemon_starting is True
    assert contract.parse({}, "LOFTD_").nix_daemon_starting is False
    assert "AGENTBOX_NIX_DAEMON_STARTING" in contract.contract_vars()
