"""Libkrun mode on a host without crun's krun handler (this one): clear refusals that create
nothing, and the disk maintenance verbs with their live-use probe against real Podman."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from agentbox_state.testing import require
from agentbox_state.workspace import Workspace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conftest import Home


def state_dir(home: Home) -> Path:
    return home.home / ".local/state/agentbox/workspaces" / Workspace.from_path(home.project).key


def test_default_mode_refuses_without_the_krun_handler(home: Home, agentbox: Path,
                                                       tree: object) -> None:  # fmt: skip
    before = tree(home.root)  # type: ignore[operator]
    for argv in ([], ["--", "true"], ["libkrun", "--", "true"]):
        out = home.run(agentbox, *argv)
        assert out.returncode == 1, out.stderr
        first, hint = out.stderr.splitlines()
        assert first.startswith("agentbox: libkrun mode is not available here: ")
        assert "`agentbox container` runs the same image" in hint
    assert tree(home.root) == before, "nothing may be created"  # type: ignore[operator]


def test_dry_run_prints_the_plan_and_creates_nothing(home: Home, agentbox: Path) -> None:
    out = home.run(agentbox, "--dry-run", "libkrun", "--mem", "2", "-p", "8080:80", "--", "id")
    assert out.returncode == 0, out.stderr
    assert "--annotation krun.ram_mib=2048" in out.stdout
    assert "--publish 8080:80" in out.stdout
    assert not state_dir(home).exists()


def digest(path: Path) -> tuple[int, int, str]:
    """Size, mtime and filesystem UUID: a reformat, a resize or a write shows in one of them
    (the file is a 64 GiB sparse image: too big to hash)."""
    st = path.stat()
    uuid = subprocess.run(["blkid", "-p", "-o", "value", "-s", "UUID", str(path)],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    return st.st_size, st.st_mtime_ns, uuid


def test_reset_nix_needs_force_first_and_replaces_the_disk(home: Home, agentbox: Path) -> None:
    refused = home.run(agentbox, "libkrun", "reset-nix")
    assert refused.returncode == 2
    assert "refusing without --force" in refused.stderr
    assert not state_dir(home).exists(), "checked before any probing or file access"
    done = home.run(agentbox, "libkrun", "reset-nix", "--force")
    assert done.returncode == 0, done.stderr
    disk = state_dir(home) / "libkrun-nix.raw"
    label = subprocess.run(["blkid", "-p", "-o", "value", "-s", "LABEL", str(disk)],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert label == "AGENTBOX_NIX"


def test_disk_attached_to_a_running_container_is_left_alone(home: Home, agentbox: Path) -> None:
    require(os.geteuid() == 0, "needs root's podman")
    assert home.run(agentbox, "libkrun", "reset-nix", "--force").returncode == 0
    disk = state_dir(home) / "libkrun-nix.raw"
    before = digest(disk)
    name = f"agentbox-probe-{os.getpid()}"
    holder = ["podman", "run", "--detach", "--rm", "--runtime", "runc", "--name", name,
              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
              "--annotation", f"krun.disk.0.path={disk}", "--entrypoint", "sleep",
              "localhost/agentbox:latest", "60"]  # fmt: skip
    subprocess.run(holder, check=True, capture_output=True)
    try:
        for argv in (["libkrun", "reset-nix", "--force"],
                     ["libkrun", "resize", "--target", "nix", "--size", "128"]):  # fmt: skip
            out = home.run(agentbox, *argv)
            assert out.returncode == 1, out.stderr
            assert f"is attached to the running container {name}; nothing was changed" in out.stderr
            assert digest(disk) == before
    finally:
        subprocess.run(["podman", "rm", "--force", name], check=False, capture_output=True)


def test_resize_checks_everything_first(home: Home, agentbox: Path) -> None:
    missing = home.run(agentbox, "libkrun", "resize", "--target", "nix", "--size", "128")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
    assert home.run(agentbox, "libkrun", "reset-nix", "--force").returncode == 0
    disk = state_dir(home) / "libkrun-nix.raw"
    size = disk.stat().st_size
    for argv, message in (
        (["--target", "nix", "--size", "64"], "is the same as its current size 64GiB"),
        (["--target", "nix", "--size", "32G"], "is smaller than its current size 64GiB"),
        (["--target", "swap", "--size", "128"], "--target 'swap' is not nix or containers"),
        (["--target", "nix", "--size", "1.5T"], "invalid --size '1.5T'"),
        (["--target", "nix", "--size", "128"], "libkrun mode is not available here"),
    ):
        out = home.run(agentbox, "libkrun", "resize", *argv)
        assert out.returncode != 0
        assert message in out.stderr, out.stderr
        assert disk.stat().st_size == size
    assert json.loads(home.run(agentbox, "paths", "--json").stdout)["workspace_slug"] == "project"
