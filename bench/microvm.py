"""The host's share of a direct-libkrun run, as ratios measured in one run (root only).

What `agentbox microvm -- true` and `loftd -- true` do before and after the VM (image digest
check, cache hit, backend selection, btrfs snapshot, guest init check, leased disks,
launch.conf, the helper process with its mounts, cleanup), with a stub libkrun whose
krun_start_enter exits at once, against the raw tools doing the least of it: a btrfs snapshot
of the cached rootfs and its deletion. Warm cache, state on a loop-mounted btrfs. Prints
numbers; never fails on them.

Each row gives the median wall time and the median CPU time (user + system) of the processes
the run started: on a busy host the wall time mostly measures the other load, the CPU time
what the run itself costs.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agentbox_testing import btrfs_loop
from loftd.guest import STATUS_PATH

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "packages/agentbox-krun/tests/stub/libkrun_stub.c"
TINY = ROOT / "tests/integration/tiny-image.sh"
IMAGE = "localhost/agentbox-bench:microvm"
RUNS = int(os.environ.get("BENCH_RUNS", "15"))
BIN = Path(sys.executable).parent


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def median_ms(action: Callable[[], None], runs: int) -> tuple[float, float]:
    """The median wall time and the median CPU time of the processes ``action`` ran, in ms."""
    wall, cpu = [], []
    for _ in range(runs):
        start, used = time.perf_counter(), _children_cpu()
        action()
        wall.append(time.perf_counter() - start)
        cpu.append(_children_cpu() - used)
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def run(cmd: list[str], **kw: object) -> None:
    subprocess.run(cmd, check=True, capture_output=True, **kw)  # type: ignore[call-overload]


def main() -> int:
    if os.geteuid() != 0:
        print("microvm bench skipped: it needs root for a loop-mounted btrfs")
        return 0
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or shutil.which("buildah") is None:
        print("microvm bench skipped: it needs a C compiler and buildah")
        return 0
    run(["sh", str(TINY), IMAGE])
    try:
        with (
            tempfile.TemporaryDirectory(prefix="agentbox-bench-") as tmp,
            btrfs_loop(Path(tmp) / "fs.img", Path(tmp) / "mnt", size="2G") as mnt,
        ):
            lib = Path(tmp) / "libkrun_stub.so"
            # the stub's "guest" reports what the guest init would: the command exited 0
            guest = Path(tmp) / "guest"
            status = '"$1"' + STATUS_PATH
            guest.write_text(f'#!/bin/sh\nmkdir -p "$(dirname {status})" && echo "exited 0" > '
                             f"{status}\n")  # fmt: skip
            guest.chmod(0o755)
            run([cc, "-shared", "-fPIC", f'-DSTUB_ON_ENTER="{guest}"', "-o", str(lib),
                 str(STUB)])  # fmt: skip
            home, project = mnt / "home", mnt / "project"
            home.mkdir()
            project.mkdir()
            env = {
                "HOME": str(home),
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "AGENTBOX_LIBKRUN_LIBRARY": str(lib),
                "LOFTD_LIBKRUN_LIBRARY": str(lib),
                # the stub is no VM: this host's kvm-pvm would be refused by the kvm check
                "AGENTBOX_SKIP_KVM_CHECK": "1",
                "LOFTD_SKIP_KVM_CHECK": "1",
            }

            def ours(*argv: str) -> Callable[[], None]:
                return lambda: run([*argv, "--image", IMAGE, "--", "true"], env=env, cwd=project)

            microvm = ours(str(BIN / "agentbox"), "microvm", "--storage", "btrfs-snapshot")
            loftd = ours(str(BIN / "loftd"), "--rootfs-backend", "btrfs-snapshot")
            microvm()  # warm: the image is cached, the disks exist
            loftd()
            cached = next((home / ".local/state/agentbox/images/sha256").glob("*/rootfs"))
            task = mnt / "task"

            def bare() -> None:
                run(["btrfs", "subvolume", "snapshot", str(cached), str(task)])
                run(["btrfs", "subvolume", "delete", str(task)])

            bare_ms = median_ms(bare, RUNS)
            microvm_ms = median_ms(microvm, RUNS)
            loftd_ms = median_ms(loftd, RUNS)
    finally:
        subprocess.run(["buildah", "rmi", IMAGE], check=False, capture_output=True)
    print(f"direct-libkrun host pipeline (stub VM, warm cache), median of {RUNS} runs: "
          "wall, then CPU of the processes started")  # fmt: skip
    rows = (("btrfs snapshot + delete (raw tools)", bare_ms),
            ("agentbox microvm -- true", microvm_ms),
            ("loftd -- true (with /nix + workspace)", loftd_ms))  # fmt: skip
    for name, (wall, cpu) in rows:
        print(f"  {name:<38}{wall:8.1f} ms  {wall / bare_ms[0]:5.2f}x  {cpu:8.1f} ms CPU  "
              f"{cpu / max(bare_ms[1], 0.1):5.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
