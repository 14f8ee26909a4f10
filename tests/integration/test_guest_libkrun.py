"""The libkrun enter path end to end, short of a VM: the agentbox image in a privileged rootful
container, given two loop devices labelled like the persistent disks and the libkrun contract.
The guest init mounts the /nix overlay, starts nix-daemon, prepares rootless Podman on the
container-storage disk in the background, and hands dev a shell; resize grows a disk's btrfs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox_testing import require_root

pytestmark = [pytest.mark.root, pytest.mark.btrfs, pytest.mark.podman, pytest.mark.image]

IMAGE = "localhost/agentbox:latest"
MIB = 1024**2


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def image(bin_dir: Path) -> str:
    require_root("a privileged rootful container and loop devices")
    built = subprocess.run([str(bin_dir / "agentbox"), "image", "build"], capture_output=True,
                           text=True, check=False, timeout=3600)  # fmt: skip
    assert built.returncode == 0, built.stderr
    return IMAGE


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[dict[str, str]]:
    loops: dict[str, str] = {}
    try:
        for name, label in (("nix", "AGENTBOX_NIX"), ("containers", "AGENTBOX_CONTAINERS")):
            raw = tmp_path / f"{name}.raw"
            sh("truncate", "-s", "512M", str(raw))
            sh("mkfs.btrfs", "--quiet", "--label", label, str(raw))
            loops[name] = sh("losetup", "--find", "--show", str(raw))
        yield loops
    finally:
        for loop in loops.values():
            subprocess.run(["losetup", "--detach", loop], check=False)


def run_guest(image: str, loops: dict[str, str], *cmd: str, entry: str = "default",
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    contract = {
        "AGENTBOX_HOST_UID": "1000", "AGENTBOX_HOST_GID": "1000",
        "AGENTBOX_LIBKRUN_NIX_OVERLAY": "1", "AGENTBOX_LIBKRUN_CONTAINERS_STORAGE": "1",
        **(env or {}),
    }  # fmt: skip
    argv = ["podman", "run", "--rm", "--privileged", "--runtime", "runc",
            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
            *(f"--device={loop}" for loop in loops.values()),
            *(f"--env={k}={v}" for k, v in contract.items())]  # fmt: skip
    if entry != "default":
        argv += ["--entrypoint", "/bin/agentbox-guest-init"]
    return subprocess.run([*argv, image, *cmd], capture_output=True, text=True, check=False,
                          timeout=600)  # fmt: skip


def test_libkrun_enter_prepares_nix_and_podman(image: str, disks: dict[str, str]) -> None:
    script = (
        "set -e; id -un; echo $NIX_REMOTE; echo $DOCKER_HOST; "
        "findmnt -n -o FSTYPE /nix; test -S /nix/var/nix/daemon-socket/socket && echo socket; "
        "agentbox-guest-init libkrun podman wait && echo podman-ready; "
        "grep ^state= /run/agentbox/podman-prep.status; "
        "podman info --format '{{.Store.GraphDriverName}}'; "
        "nix-store --store daemon --version >/dev/null && echo nix-store-ok; "
        "sock=$(agentbox-guest-init libkrun podman service-wait); echo $sock; "
        "curl -s --unix-socket $sock http://d/_ping; echo; "
        "docker --version | cut -d' ' -f1"
    )
    done = run_guest(image, disks, "sh", "-c", script)
    assert done.returncode == 0, done.stderr + done.stdout
    assert done.stdout.splitlines() == [
        "dev",
        "unix:///nix/var/nix/daemon-socket/socket",
        "unix:///run/user/1000/podman/podman.sock",
        "overlay",
        "socket",
        "podman-ready",
        "state=ready",
        "btrfs",
        "nix-store-ok",
        "/run/user/1000/podman/podman.sock",
        "OK",
        "podman",
    ]


def test_entering_as_root_puts_roots_podman_on_the_disk(image: str,
                                                       disks: dict[str, str]) -> None:  # fmt: skip
    """Rootless loftd (and --root) enter as root: root's own Podman storage is the disk."""
    script = (
        "set -e; id -un; agentbox-guest-init libkrun podman wait && echo podman-ready; "
        "findmnt -n -o FSTYPE /var/lib/containers; "
        "podman info --format '{{.Store.GraphDriverName}} {{.Store.GraphRoot}}'"
    )
    done = run_guest(image, disks, "sh", "-c", script, env={"AGENTBOX_ENTER_AS_ROOT": "1"})
    assert done.returncode == 0, done.stderr + done.stdout
    assert done.stdout.splitlines() == [
        "root", "podman-ready", "btrfs", "btrfs /var/lib/containers/storage",
    ]  # fmt: skip


def test_resize_grows_the_filesystem(image: str, disks: dict[str, str], tmp_path: Path) -> None:
    with open(tmp_path / "nix.raw", "r+b") as f:
        f.truncate(1024 * MIB)
    sh("losetup", "--set-capacity", disks["nix"])
    done = run_guest(image, disks, "libkrun", "resize", "--target", "nix", entry="init")
    assert done.returncode == 0, done.stderr
    super_ = sh("btrfs", "inspect-internal", "dump-super", disks["nix"])
    sizes = [int(line.split()[1]) for line in super_.splitlines() if line.startswith("total_bytes")]
    assert sizes == [1024 * MIB]


def run_loftd_guest(image: str, *cmd: str, extra: tuple[str, ...] = ()
                    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    contract = {"LOFTD_HOST_UID": "1000", "LOFTD_HOST_GID": "1000", "LOFTD_NIX_HOST_OVERLAY": "1"}
    argv = ["podman", "run", "--rm", "--privileged", "--runtime", "runc",
            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", *extra,
            *(f"--env={k}={v}" for k, v in contract.items()),
            "--entrypoint", "/usr/bin/loftd-guest-init", image, "enter", "--", *cmd]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)


def test_loftd_host_overlay_serves_the_nix_it_was_given(image: str) -> None:
    """loftd mounts /nix on the host; the guest init checks it is there and starts the daemon."""
    script = ("id -un; echo $NIX_REMOTE; test -S /nix/var/nix/daemon-socket/socket && echo socket;"
              " nix-store --store daemon --version >/dev/null && echo nix-store-ok")  # fmt: skip
    done = run_loftd_guest(image, "sh", "-c", script)
    assert done.returncode == 0, done.stderr + done.stdout
    assert done.stdout.splitlines() == [
        "dev", "unix:///nix/var/nix/daemon-socket/socket", "socket", "nix-store-ok",
    ]  # fmt: skip
    # no /nix/store where the host should have put the overlay: a one-line reason, exit 4
    empty = run_loftd_guest(image, "true", extra=("--tmpfs", "/nix:notmpcopyup"))
    assert empty.returncode == 4
    assert empty.stderr.strip().endswith(
        "LOFTD_NIX_HOST_OVERLAY=1 but /nix/store is missing: the host did not attach the /nix "
        "overlay"
    )
