"""Container mode: a rootless Podman task with the project at /workspace and /nix served by a
per-workspace nix-daemon sidecar over a fuse-overlayfs of the image's /nix."""
