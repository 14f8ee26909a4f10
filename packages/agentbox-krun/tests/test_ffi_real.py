"""The same setup calls against a real libkrun: the fork in PyPI's smolmachines wheel (it has
no krun_set_root, so the root goes through krun_add_virtiofs("/dev/root", ...)). Everything up
to krun_start_enter; a boot only where KVM can run a guest (not kvm-pvm: see test_boot)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agentbox_krun import kvm
from agentbox_krun.launchconf import LaunchConf
from agentbox_testing import host_root, require

if TYPE_CHECKING:
    from conftest import Launched

CHILD = """
import os, sys
from pathlib import Path
from agentbox_krun.ffi import load
from agentbox_krun.helper import configure
from agentbox_krun.launchconf import Disk, LaunchConf
tmp = Path(sys.argv[1])
krun = load(os.environ, "AGENTBOX_LIBKRUN_LIBRARY")
print("has_set_root", krun.has("krun_set_root"))
# one process, one logger: this fork aborts when its logger is set up twice
if sys.argv[2] == "loftd":
    print("has_init_log", krun.has("krun_init_log"), krun.has("krun_check_nested_virt"))
    loftd = LaunchConf(
        task_rootfs=str(tmp / "rootfs"), ram_mib=512, vcpus=1, workdir="/workspace",
        exec_path="/bin/loftd-guest-init", argv=("loftd-guest-init", "enter"),
        disks=(Disk("loftd-containers", str(tmp / "nix.raw"), False),), init_log=True,
        nested_virt=True,
    )
    ctx = configure(krun, loftd)
    print("loftd configured", ctx >= 0)
    krun.free_ctx(ctx)
    sys.exit(0)
conf = LaunchConf(
    task_rootfs=str(tmp / "rootfs"), ram_mib=512, vcpus=1, workdir="/workspace",
    exec_path="/bin/agentbox-guest-init", argv=("agentbox-guest-init", "microvm", "enter"),
    env=("A=1",), disks=(Disk("agentbox-nix", str(tmp / "nix.raw"), False),),
    workspace_source=str(tmp / "ws"), workspace_tag="agentbox-workspace",
    workspace_target="/workspace",
)
ctx = configure(krun, conf)
print("configured", ctx >= 0)
krun.free_ctx(ctx)
print("freed")
"""


def real_libkrun() -> Path | None:
    try:
        import smol  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(smol.__file__).parent / "libkrun.so"
    return path if path.exists() else None


@pytest.mark.libkrun
@pytest.mark.parametrize("order", ["microvm", "loftd"])
def test_setup_calls_against_the_real_fork(tmp_path: Path, order: str) -> None:
    lib = real_libkrun()
    require(lib is not None, "PyPI's smolmachines (a libkrun build) is not installed")
    require(Path("/usr/lib/x86_64-linux-gnu/libvirglrenderer.so.1").exists(),
            "libvirglrenderer1 is missing (apt-get install libvirglrenderer1)")  # fmt: skip
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "ws").mkdir()
    with open(tmp_path / "nix.raw", "wb") as f:
        f.truncate(64 * 1024**2)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), order],
        env={**os.environ, "AGENTBOX_LIBKRUN_LIBRARY": str(lib),
             # the wheel's libkrun uses virglrenderer without linking it
             "LD_PRELOAD": "libvirglrenderer.so.1"},
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    if order == "microvm":
        assert lines == ["has_set_root False", "configured True", "freed"]
    else:  # krun_init_log when present (else set_log_level), nested virt asked, no virtiofs
        assert lines[0] == "has_set_root False"
        assert lines[1].startswith("has_init_log ")
        assert lines[2:] == ["loftd configured True"]


@pytest.mark.libkrun
@pytest.mark.kvm
def test_boot(tmp_path: Path, launch: Callable[..., Launched]) -> None:
    """A guest boots on the real libkrun: the host's /bin/sh, copied with its libraries into a
    small root, runs in the VM, and its exit status is the helper's."""
    lib = real_libkrun()
    require(lib is not None, "PyPI's smolmachines (a libkrun build) is not installed")
    assert lib is not None
    cannot = kvm.problem(kvm.probe())
    require(cannot is None, f"booting a guest needs a KVM that runs one; here {cannot}",
            host_hardware=True)  # fmt: skip
    root = host_root(tmp_path / "rootfs", "/bin/sh")
    conf = LaunchConf(task_rootfs=str(root), ram_mib=512, vcpus=1, workdir="/",
                      exec_path="/bin/sh", argv=("sh", "-c", "exit 7"))  # fmt: skip
    done = launch(lib, conf, LD_PRELOAD="libvirglrenderer.so.1",
                  LD_LIBRARY_PATH=str(lib.parent))  # libkrunfw.so.5, opened by name  # fmt: skip
    assert (done.code, done.calls) == (7, []), done.err
