import os
import socket
import subprocess
import threading
import time
from pathlib import Path

from agentbox_guest_init import contract, home, nixwait


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


def test_not_root_the_wrappers_go_into_the_dev_users_cache(tmp_path: Path) -> None:
    real = real_tools(tmp_path, "nix")
    wait_bin = nixwait.install(str(real), "/s", root=str(tmp_path), wait_dir=nixwait.USER_WAIT_DIR)
    assert wait_bin == "/home/dev/.cache/agentbox/nix-wait/bin"
    assert os.listdir(tmp_path / "home/dev/.cache/agentbox/nix-wait/bin") == ["nix"]
    assert (tmp_path / "home/dev/.cache/agentbox/nix-wait/wait-for-daemon").stat().st_mode & 0o111


def test_not_root_a_home_of_ones_own_is_filled_and_nothing_else(tmp_path: Path) -> None:
    me = os.geteuid()
    dirs = home.home_dirs("/home/dev")
    assert home.fill_own(str(tmp_path), me, dirs) is None  # no home: nothing made
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "home/dev/.cache").mkdir(parents=True, mode=0o700)
    (tmp_path / "home/dev/.cache/kept").touch()
    assert home.fill_own(str(tmp_path), me + 1, dirs) is None  # someone else's: untouched
    assert sorted(os.listdir(tmp_path / "home/dev")) == [".cache"]
    assert home.fill_own(str(tmp_path), me, dirs) is None
    made = sorted(
        str(p.relative_to(tmp_path / "home/dev")) for p in (tmp_path / "home/dev").rglob("*")
    )
    assert made == [".cache", ".cache/kept", ".cache/tmp", ".config", ".local", ".local/share",
                    ".local/state"]  # fmt: skip
    assert (tmp_path / "home/dev/.cache").stat().st_mode & 0o777 == 0o700  # existing: kept
    assert (tmp_path / "home/dev/.local/state").stat().st_mode & 0o777 == 0o700


def test_not_root_a_dir_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    me = os.geteuid()
    (tmp_path / "home/dev").mkdir(parents=True)
    (tmp_path / "home/dev/.local").write_text("a file where a dir should be")
    assert home.fill_own(str(tmp_path), me, home.home_dirs("/home/dev")) == "/home/dev/.local/share"


def test_without_a_daemon_the_clients_say_why_and_fail(tmp_path: Path) -> None:
    real = real_tools(tmp_path, "nix", "nix-build")
    nixwait.install(str(real), "/s", root=str(tmp_path), off=True)
    bin_dir = tmp_path / "run/agentbox/nix-wait/bin"
    done = subprocess.run(["nix-build", "x.nix"], capture_output=True, text=True, check=False,
                          env={"PATH": f"{bin_dir}:{real}:/usr/bin:/bin"})  # fmt: skip
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "nix-build: agentbox: this sandbox has no Nix daemon: under a network policy the "
        "project's daemon would fetch with the host's network, outside the policy. On the host, "
        "`agentbox container --nix-outside-policy` gives the sandbox that daemon anyway; "
        "`--net open` has no policy\n"
    )
    assert contract.parse({"AGENTBOX_NIX_DAEMON_OFF": "1"}).nix_daemon_off is True
    assert contract.parse({"LOFTD_NIX_DAEMON_OFF": "1"}, "LOFTD_").nix_daemon_off is False
