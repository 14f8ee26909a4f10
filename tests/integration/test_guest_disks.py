"""The guest init's libkrun disk paths for real, as root: loop devices labelled like the real
disks, the /nix overlay, and the in-guest resize; in a private mount namespace."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agentbox_guest_init.contract import GuestError
from agentbox_guest_init.nix import wait_for_socket
from agentbox_testing import require_root

pytestmark = [pytest.mark.root, pytest.mark.btrfs]

SCRIPT = r"""
import json, os, subprocess, sys
from agentbox_guest_init import contract, disks, nix, runtime
from agentbox_guest_init.contract import GuestError

tmp = sys.argv[1]
out = {}
loops = {}
def sh(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()
try:
    for name, label in (("nix", "AGENTBOX_NIX"), ("containers", "AGENTBOX_CONTAINERS")):
        image = f"{tmp}/{name}.raw"
        sh("truncate", "-s", "256M", image)
        sh("mkfs.btrfs", "--quiet", "--label", label, image)
        loops[name] = sh("losetup", "--find", "--show", image)
    out["found"] = [disks.find_disk("AGENTBOX_NIX", "agentbox-nix") == loops["nix"],
                    disks.find_disk("AGENTBOX_CONTAINERS", "agentbox-containers")
                    == loops["containers"]]
    try:
        disks.find_disk("AGENTBOX_NOPE", "agentbox-nope")
    except GuestError as err:
        out["missing"] = err.reason

    lower = f"{tmp}/nix"
    os.makedirs(f"{lower}/store/aaa-image-pkg")
    os.makedirs(f"{lower}/var/nix/db")
    with open(f"{lower}/var/nix/db/db.sqlite", "w") as f:
        f.write("image db")
    lower_fd = os.open(lower, os.O_RDONLY)  # to look below the overlay later
    disk = f"{tmp}/disk"
    nix.mount_overlay(loops["nix"], nix=lower, disk_mount=disk)
    nix.mount_overlay(loops["nix"], nix=lower, disk_mount=disk)  # again: nothing changes
    with open(f"{lower}/store/bbb-new", "w") as f:
        f.write("built in the guest")
    out["merged"] = sorted(os.listdir(f"{lower}/store"))
    out["upper"] = sorted(os.listdir(f"{disk}/upper/store"))
    out["below"] = sorted(os.listdir(f"/proc/self/fd/{lower_fd}/store"))
    out["seeded"] = open(f"{disk}/upper/var/nix/db/db.sqlite").read()
    out["overlay_mounts"] = sum(1 for line in open("/proc/self/mountinfo")
                                if line.split(" ")[4] == lower)
    sh("umount", lower)
    nix.mount_overlay(loops["nix"], nix=lower, disk_mount=disk)  # a later boot: data persists
    out["persisted"] = os.path.exists(f"{lower}/store/bbb-new")
    sh("umount", lower)
    sh("umount", disk)

    with open(f"{tmp}/nix.raw", "r+b") as f:
        f.truncate(512 * 1024**2)
    sh("losetup", "--set-capacity", loops["nix"])
    c = contract.parse({})
    runtime.resize(c, "nix")
    super_ = sh("btrfs", "inspect-internal", "dump-super", loops["nix"])
    out["resized"] = [int(l.split()[1]) for l in super_.splitlines() if l.startswith("total_bytes")]
    try:
        runtime.resize(c, "swap")
    except GuestError as err:
        out["bad_target"] = [err.reason, err.code]
finally:
    for loop in loops.values():
        subprocess.run(["losetup", "--detach", loop], check=False)
print(json.dumps(out))
"""


def test_disks_overlay_and_resize_on_loop_devices(tmp_path: Path) -> None:
    require_root("loop devices, mounts and a private mount namespace")
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", SCRIPT,
         str(tmp_path)], capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out == {
        "found": [True, True],
        "missing": "persistent disk not found (label=AGENTBOX_NOPE id=agentbox-nope)",
        "merged": ["aaa-image-pkg", "bbb-new"],
        "upper": ["bbb-new"],
        "below": ["aaa-image-pkg"],
        "seeded": "image db",
        "overlay_mounts": 1,
        "persisted": True,
        "resized": [512 * 1024**2],
        "bad_target": ["unknown resize target 'swap' (nix or containers)", 2],
    }


def test_daemon_socket_wait(tmp_path: Path) -> None:
    path = str(tmp_path / "socket")
    with pytest.raises(GuestError, match=r"did not open .* within 0\.2 s"):
        wait_for_socket(path, None, 0.2)
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    accepted = threading.Thread(target=lambda: server.accept()[0].close())
    accepted.start()
    wait_for_socket(path, None, 5)
    accepted.join(5)
    server.close()
    daemon = subprocess.Popen(["sh", "-c", "exit 3"])
    daemon.wait()
    with pytest.raises(GuestError, match="nix-daemon exited with status 3 before"):
        wait_for_socket(str(tmp_path / "never"), daemon, 5)
