"""`agentbox microvm`'s contract, handed to the direct-libkrun runtime as data: what its plan
gives libkrun and the guest init (pure: the host's facts are written out here)."""

from __future__ import annotations

from pathlib import Path

from agentbox_cli.microvm.face import FACE, MICROVM_CONTAINERS, MICROVM_NIX
from agentbox_krun.launchconf import Disk
from agentbox_storage.backends import Backend
from agentbox_storage.imagecache import CacheEntry
from loftd.facts import HostFacts
from loftd.plan import plan_task
from loftd.runtime import TaskRequest

HEX = "cd" * 32


def test_the_microvm_contract_as_a_rootless_plan() -> None:
    req = TaskRequest(
        image="localhost/agentbox:latest", backend=Backend.AUTO, workspace=Path("/home/u/p"),
        state_dir=Path("/s/ws"), images_dir=Path("/s/images"), task_id="p-1",
        command=(), uid=1000, gid=1000, ram_mib=8192, vcpus=4,
    )  # fmt: skip
    host = HostFacts(
        library="libkrun.so.1", python="/py", passthrough=(), kvm=None,
        userns=("buildah", "unshare", "--"), current=f"sha256:{HEX}",
        cached=CacheEntry(f"sha256:{HEX}", Path(f"/s/images/sha256/{HEX}")),
        backends=(Backend.BTRFS_SNAPSHOT,),
    )  # fmt: skip
    plan = plan_task(FACE, req, host)
    launch = plan.launch
    assert launch.argv == ("agentbox-guest-init", "microvm", "enter", "--", "fish", "-l")
    assert launch.env == (
        "AGENTBOX_MICROVM_WORKSPACE_TAG=agentbox-workspace",
        "AGENTBOX_HOST_UID=1000", "AGENTBOX_HOST_GID=1000",
        "AGENTBOX_GUEST_STATUS_FILE=/.agentbox-task/guest.status",
        "AGENTBOX_KVM_DROP_TO_DEV=1",
        "AGENTBOX_LIBKRUN_NIX_OVERLAY=1", "AGENTBOX_LIBKRUN_CONTAINERS_STORAGE=1",
        "AGENTBOX_LIBKRUN_NIX_DISK_ID=agentbox-nix", "AGENTBOX_LIBKRUN_NIX_DISK_LABEL=AGENTBOX_NIX",
        "AGENTBOX_LIBKRUN_CONTAINERS_DISK_ID=agentbox-containers",
        "AGENTBOX_LIBKRUN_CONTAINERS_DISK_LABEL=AGENTBOX_CONTAINERS",
    )  # fmt: skip
    assert launch.disks == (
        Disk("agentbox-nix", "/s/ws/microvm-nix.raw", False),
        Disk("agentbox-containers", "/s/ws/microvm-containers.raw", False),
    )
    assert plan.disks == ((MICROVM_NIX, Path("/s/ws/microvm-nix.raw")),
                          (MICROVM_CONTAINERS, Path("/s/ws/microvm-containers.raw")))  # fmt: skip
    assert (launch.workspace_source, launch.workspace_tag, launch.workspace_target) == (
        "/home/u/p", "agentbox-workspace", "/workspace",
    )  # fmt: skip
    assert (launch.mounts, launch.nix_overlay, launch.init_log, launch.nested_virt) == (
        (), None, False, False,
    )  # fmt: skip
    # the workspace over virtiofs and /nix from a disk: nothing to mount on the host, so the
    # helper runs as the user, outside Buildah's namespace
    assert list(plan.helper_argv) == [
        "/py", "-m", "agentbox_krun.enter", "AGENTBOX_LIBKRUN_LIBRARY",
        "/s/ws/tasks/p-1/launch.conf",
    ]  # fmt: skip
    assert plan.helper_env == (("AGENTBOX_LIBKRUN_LIBRARY", "libkrun.so.1"),)
