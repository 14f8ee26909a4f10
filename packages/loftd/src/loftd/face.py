"""loftd's contract with the direct-libkrun runtime and its guest init: names, the guest init
and its argv, the container storage disk, /nix as a host overlay, the workspace grafted into the
root, libkrun's logger and nested-virt check, and the ``LOFTD_*`` variables that announce them."""

from __future__ import annotations

from agentbox_storage.disks import DiskSpec
from loftd.runtime import Face

LOFTD_CONTAINERS = DiskSpec(
    file_name="loftd-containers.raw", label="LOFTD_CONTAINERS",
    block_id="loftd-containers", purpose="loftd's container storage disk",
)  # fmt: skip

FACE = Face(
    name="loftd", library_env="LOFTD_LIBKRUN_LIBRARY", env_prefix="LOFTD_",
    guest_init="bin/loftd-guest-init", guest_argv=("loftd-guest-init", "enter", "--"),
    disks=(LOFTD_CONTAINERS,),
    guest_env=(
        "LOFTD_CONTAINERS_STORAGE=1",
        f"LOFTD_CONTAINERS_DISK_ID={LOFTD_CONTAINERS.block_id}",
        f"LOFTD_CONTAINERS_DISK_LABEL={LOFTD_CONTAINERS.label}",
        "LOFTD_NIX_HOST_OVERLAY=1",
    ),
    nix_overlay_dir="nix-overlay", init_log=True, nested_virt=True,
)  # fmt: skip
