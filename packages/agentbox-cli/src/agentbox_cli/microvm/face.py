"""``agentbox microvm``'s contract with the direct-libkrun runtime and its guest init: names,
the guest init and its argv, the persistent disks (a /nix disk the guest overlays, container
storage), the workspace over virtiofs, and the ``AGENTBOX_*`` variables that announce them."""

from __future__ import annotations

from dataclasses import replace

from agentbox_cli.libkrun.disks import LIBKRUN_CONTAINERS, LIBKRUN_NIX
from loftd.runtime import Face

# the same disks as libkrun mode's for the same guest init (labels, ids), in files of their own
MICROVM_NIX = replace(LIBKRUN_NIX, file_name="microvm-nix.raw")
MICROVM_CONTAINERS = replace(LIBKRUN_CONTAINERS, file_name="microvm-containers.raw")

FACE = Face(
    name="agentbox microvm", library_env="AGENTBOX_LIBKRUN_LIBRARY", env_prefix="AGENTBOX_",
    guest_init="bin/agentbox-guest-init",
    guest_argv=("agentbox-guest-init", "microvm", "enter", "--"),
    disks=(MICROVM_NIX, MICROVM_CONTAINERS),
    workspace_tag="agentbox-workspace", workspace_tag_env="AGENTBOX_MICROVM_WORKSPACE_TAG",
    shares_env="AGENTBOX_MICROVM_SHARES",
    guest_env=(
        "AGENTBOX_KVM_DROP_TO_DEV=1",
        "AGENTBOX_LIBKRUN_NIX_OVERLAY=1", "AGENTBOX_LIBKRUN_CONTAINERS_STORAGE=1",
        f"AGENTBOX_LIBKRUN_NIX_DISK_ID={MICROVM_NIX.block_id}",
        f"AGENTBOX_LIBKRUN_NIX_DISK_LABEL={MICROVM_NIX.label}",
        f"AGENTBOX_LIBKRUN_CONTAINERS_DISK_ID={MICROVM_CONTAINERS.block_id}",
        f"AGENTBOX_LIBKRUN_CONTAINERS_DISK_LABEL={MICROVM_CONTAINERS.label}",
    ),
)  # fmt: skip
