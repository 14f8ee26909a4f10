"""``agentbox microvm``'s contract with the direct-libkrun runtime and its guest init: names,
the guest init and its argv, the persistent disks (a /nix disk the guest overlays, container
storage), the workspace over virtiofs, and the ``AGENTBOX_*`` variables that announce them."""

from __future__ import annotations

from agentbox_storage.disks import DiskSpec
from loftd.runtime import Face

MICROVM_NIX = DiskSpec(file_name="microvm-nix.raw", label="AGENTBOX_NIX",
                       block_id="agentbox-nix", purpose="the /nix store disk")  # fmt: skip
MICROVM_CONTAINERS = DiskSpec(
    file_name="microvm-containers.raw", label="AGENTBOX_CONTAINERS",
    block_id="agentbox-containers", purpose="the container storage disk",
)  # fmt: skip

FACE = Face(
    name="agentbox microvm", library_env="AGENTBOX_LIBKRUN_LIBRARY", env_prefix="AGENTBOX_",
    guest_init="bin/agentbox-guest-init",
    guest_argv=("agentbox-guest-init", "microvm", "enter", "--"),
    disks=(MICROVM_NIX, MICROVM_CONTAINERS),
    workspace_tag="agentbox-workspace", workspace_tag_env="AGENTBOX_MICROVM_WORKSPACE_TAG",
    guest_env=(
        "AGENTBOX_KVM_DROP_TO_DEV=1",
        "AGENTBOX_LIBKRUN_NIX_OVERLAY=1", "AGENTBOX_LIBKRUN_CONTAINERS_STORAGE=1",
        f"AGENTBOX_LIBKRUN_NIX_DISK_ID={MICROVM_NIX.block_id}",
        f"AGENTBOX_LIBKRUN_NIX_DISK_LABEL={MICROVM_NIX.label}",
        f"AGENTBOX_LIBKRUN_CONTAINERS_DISK_ID={MICROVM_CONTAINERS.block_id}",
        f"AGENTBOX_LIBKRUN_CONTAINERS_DISK_LABEL={MICROVM_CONTAINERS.label}",
    ),
)  # fmt: skip
