"""Podman-based libkrun mode's persistent disks (its contract with the guest init's
``AGENTBOX_LIBKRUN_*_DISK_*`` variables): file names in the workspace state dir, labels, ids."""

from __future__ import annotations

from agentbox_storage.disks import DiskSpec

LIBKRUN_NIX = DiskSpec(file_name="libkrun-nix.raw", label="AGENTBOX_NIX",
                       block_id="agentbox-nix", purpose="the /nix store disk")  # fmt: skip
LIBKRUN_CONTAINERS = DiskSpec(
    file_name="libkrun-containers.raw", label="AGENTBOX_CONTAINERS",
    block_id="agentbox-containers", purpose="the container storage disk",
)  # fmt: skip
