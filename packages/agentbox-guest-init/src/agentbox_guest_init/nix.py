"""``/nix`` as an overlay: the image's /nix below, upper/work on the persistent disk."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

from agentbox_guest_init.contract import GuestError
from agentbox_guest_init.profile import Profile
from agentbox_guest_init.system import is_mounted, run

NIX_DISK_MOUNT = "/run/agentbox/nix-disk"
SOCKET_DIR = "/nix/var/nix/daemon-socket"


def overlay_options(lower: str, disk_mount: str) -> str:
    return f"lowerdir={lower},upperdir={disk_mount}/upper,workdir={disk_mount}/work"


def mount_overlay(device: str, *, nix: str = "/nix", disk_mount: str = NIX_DISK_MOUNT,
                  profile: Profile | None = None) -> None:  # fmt: skip
    """Mount the disk, seed the upper layer on first use, and mount the overlay on ``nix``."""
    prof = profile or Profile("nix", enabled=False)
    prof.step("bootstrap-nix:mount-disk")
    os.makedirs(disk_mount, exist_ok=True)
    if not is_mounted(disk_mount):
        run(["mount", "-t", "btrfs", device, disk_mount])
    prof.step("bootstrap-nix:preseed-upper")
    upper = f"{disk_mount}/upper"
    for d in (upper, f"{disk_mount}/work", f"{upper}/store", f"{upper}/var", f"{upper}/var/nix"):
        os.makedirs(d, exist_ok=True)
    if os.path.isdir(f"{nix}/var"):
        run(["cp", "-a", "--no-clobber", f"{nix}/var/.", f"{upper}/var"])
    os.chmod(f"{upper}/store", 0o1775)
    prof.step("bootstrap-nix:mount-overlay")
    if not is_mounted(nix):
        run(["mount", "-t", "overlay", "overlay", "-o", overlay_options(nix, disk_mount), nix])
    prof.end()


def wait_for_socket(path: str, daemon: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon is not None and daemon.poll() is not None and not os.path.exists(path):
            raise GuestError(f"nix-daemon exited with status {daemon.returncode} before {path}")
        if os.path.exists(path):
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(path)
                    return
                except OSError:
                    pass
        time.sleep(0.05)
    raise GuestError(f"nix-daemon did not open {path} within {timeout:g} s")


def start_daemon(nix: str = "/nix", timeout: float = 10.0) -> None:
    os.makedirs(f"{nix}/var/nix/daemon-socket", exist_ok=True)
    daemon_bin = shutil.which("nix-daemon")
    if daemon_bin is None:
        raise GuestError("nix-daemon is missing from the image")
    log = open("/run/agentbox/nix-daemon.log", "ab")  # noqa: SIM115 - handed to the daemon
    proc = subprocess.Popen([daemon_bin], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)  # fmt: skip
    wait_for_socket(f"{nix}/var/nix/daemon-socket/socket", proc, timeout)
