"""Running tools inside the guest (mount, blkid, btrfs, nix-daemon): one place, clear errors."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

from agentbox_guest_init.contract import GuestError


def run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)  # fmt: skip
    except FileNotFoundError:
        raise GuestError(
            f"{argv[0]} is missing from the image (needed for: {shlex.join(argv)})"
        ) from None
    if check and done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise GuestError(f"`{shlex.join(argv)}` failed: {tail[0]}")
    return done


def self_argv() -> list[str]:
    """How to run this guest init again (frozen binary or ``python -m``)."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "agentbox_guest_init"]


def spawn_background(argv: list[str], log_path: str, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in its own session with output to ``log_path``; return its pid."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, env=env)  # fmt: skip
    return proc.pid


def is_mounted(target: str) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4 and fields[4].replace("\\040", " ") == target:
                return True
    return False
