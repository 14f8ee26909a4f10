"""Podman on the container-storage disk, prepared in the background: rootless for ``dev``, or
root's own storage when the shell enters as root (rootless loftd, ``--root``).

``prepare`` runs in a detached worker (``libkrun podman prep``) that records its progress in
``/run/agentbox/podman-prep.status``; ``podman`` wrappers call ``libkrun podman wait`` and the
``docker`` wrappers ``libkrun podman service-wait``, which also (re)starts the API socket.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import time

from agentbox_guest_init.contract import GuestError
from agentbox_guest_init.disks import find_disk
from agentbox_guest_init.identity import DEV, DEV_HOME
from agentbox_guest_init.status import StatusFile
from agentbox_guest_init.sysctl import write_sysctl
from agentbox_guest_init.system import is_mounted, run

RUN_DIR = "/run/agentbox"
IDMAP_BIN = f"{RUN_DIR}/idmap-bin"
SUBID_START, SUBID_COUNT = 100000, 65536
STORAGE_MOUNT = f"{DEV_HOME}/.local/share/containers"
ROOT_STORAGE_MOUNT = "/var/lib/containers"


def storage_mount(uid: int) -> str:
    return ROOT_STORAGE_MOUNT if uid == 0 else STORAGE_MOUNT


def config_dir(uid: int) -> str:
    """Where Podman reads this user's configuration (root reads the system's)."""
    return "/etc/containers" if uid == 0 else f"{DEV_HOME}/.config/containers"


def subid_line(uid: int) -> str:
    if SUBID_START <= uid < SUBID_START + SUBID_COUNT:
        raise GuestError(f"dev's id {uid} lies inside the sub-id range {SUBID_START}:{SUBID_COUNT}")
    return f"{DEV}:{SUBID_START}:{SUBID_COUNT}\n"


def config_files(uid: int) -> dict[str, str]:
    """containers config for ``uid`` (pure): storage on the btrfs disk, no cgroups in the VM."""
    runroot = "/run/containers/storage" if uid == 0 else f"/run/user/{uid}/containers"
    return {
        "storage.conf": (
            "[storage]\n"
            'driver = "btrfs"\n'
            f'graphroot = "{storage_mount(uid)}/storage"\n'
            f'runroot = "{runroot}"\n'
        ),
        "containers.conf": (
            "[containers]\n"
            'cgroups = "disabled"\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'helper_binaries_dir = ["{IDMAP_BIN}", "/usr/libexec/podman", "/usr/lib/podman", '
            '"/usr/bin"]\n'
        ),
        "registries.conf": 'unqualified-search-registries = ["docker.io"]\n',
        "policy.json": '{"default": [{"type": "insecureAcceptAnything"}]}\n',
    }


def prepare(uid: int, gid: int, label: str, disk_id: str) -> None:
    """Kernel knobs, sub-ids and setuid id-map helpers, the storage disk, the config files."""
    write_sysctl("/", "user.max_user_namespaces", "28633")
    if os.path.exists("/proc/sys/kernel/unprivileged_userns_clone"):
        write_sysctl("/", "kernel.unprivileged_userns_clone", "1")
    if os.path.exists("/dev/net/tun"):
        os.chmod("/dev/net/tun", 0o666)
    if uid != 0:  # rootless Podman maps sub-ids through setuid helpers
        line = subid_line(uid)
        for name in ("/etc/subuid", "/etc/subgid"):
            with open(name, "w", encoding="ascii") as f:
                f.write(line)
        os.makedirs(IDMAP_BIN, exist_ok=True)
        for tool in ("newuidmap", "newgidmap"):
            found = shutil.which(tool)
            if found is None:
                raise GuestError(f"{tool} is missing from the image (package uidmap)")
            target = f"{IDMAP_BIN}/{tool}"
            shutil.copy2(found, target)
            os.chown(target, 0, 0)
            os.chmod(target, 0o4755)
    device = find_disk(label, disk_id)
    mount_point = storage_mount(uid)
    os.makedirs(mount_point, exist_ok=True)
    if not is_mounted(mount_point):
        run(["mount", "-t", "btrfs", device, mount_point])
    conf_dir = config_dir(uid)
    for d in (f"{mount_point}/storage", conf_dir, f"/run/user/{uid}/containers"):
        os.makedirs(d, exist_ok=True)
        os.chown(d, uid, gid)
    os.chown(mount_point, uid, gid)
    for name, text in config_files(uid).items():
        path = f"{conf_dir}/{name}"
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chown(path, uid, gid)


def worker(uid: int, gid: int, label: str, disk_id: str) -> int:
    """The background worker: prepare, then mark the status ready or failed."""
    status = StatusFile(RUN_DIR, "podman-prep")
    try:
        prepare(uid, gid, label, disk_id)
    except (GuestError, OSError) as err:
        status.transition("failed", pid=os.getpid(), error=str(err))
        return 1
    status.transition("ready", pid=os.getpid())
    return 0


def wait(timeout: float = 120.0) -> None:
    status = StatusFile(RUN_DIR, "podman-prep")
    fields = status.wait(timeout)
    state = fields.get("state")
    if state == "ready":
        return
    if state == "failed":
        raise GuestError(f"podman preparation failed: {fields.get('error', '?')} "
                         f"(log: {status.log_path})")  # fmt: skip
    raise GuestError(f"podman preparation is still {state} after {timeout:g} s "
                     f"(log: {status.log_path})")  # fmt: skip


def _connectable(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def service_wait(uid: int, timeout: float = 30.0) -> str:
    """Wait for the preparation, then make sure the Podman API socket answers; its path."""
    wait()
    run_dir = f"/run/user/{uid}/podman"
    sock = f"{run_dir}/podman.sock"
    os.makedirs(run_dir, exist_ok=True)
    fd = os.open(f"{run_dir}/service.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _connectable(sock):
            return sock
        if os.path.lexists(sock):
            os.unlink(sock)
        podman = os.environ.get("AGENTBOX_REAL_PODMAN") or "/usr/bin/podman"
        subprocess.Popen([podman, "system", "service", "--time=0", f"unix://{sock}"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _connectable(sock):
                return sock
            time.sleep(0.05)
        raise GuestError(f"the Podman API socket {sock} did not answer within {timeout:g} s")
    finally:
        os.close(fd)
