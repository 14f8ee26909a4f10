"""agentbox's storage layer: raw btrfs disks, task roots and the image cache."""

__version__ = "0.1.0"
