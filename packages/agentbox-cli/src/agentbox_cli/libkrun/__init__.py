"""Libkrun mode: the task runs in a microVM through Podman and crun's krun handler, with two
persistent btrfs disks for /nix and container storage."""
