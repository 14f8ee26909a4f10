"""Task-root materialisation by btrfs snapshot, as ratios measured in one run (root only).

- agentbox's btrfs-snapshot task root against a bare `btrfs subvolume snapshot` (target <= 2x);
- the same against a real `cp -a` of the same ~200 MB rootfs (target: >= 50x faster);
- snapshot time as the rootfs doubles (target: flat).
Prints numbers; never fails on them.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agentbox_state.runner import SubprocessRunner
from agentbox_storage import taskroot
from agentbox_storage.backends import Backend
from agentbox_testing import btrfs_loop

RUNS = int(os.environ.get("BENCH_RUNS", "15"))
MIB = 1024**2


def make_rootfs(path: Path, megabytes: int) -> None:
    """A rootfs-shaped tree: ~megabytes of incompressible files, 50 per dir, 64 KiB each."""
    subprocess.run(["btrfs", "subvolume", "create", str(path)], check=True, capture_output=True)
    files = megabytes * MIB // (64 * 1024)
    for i in range(files):
        d = path / f"usr/lib/d{i // 50}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(64 * 1024))
    subprocess.run(["sync"], check=True)


def median_ms(action: Callable[[], None], undo: Callable[[], None], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
        undo()
    return statistics.median(samples) * 1000


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def main() -> int:
    if os.geteuid() != 0:
        print("storage bench skipped: it needs root for a loop-mounted btrfs")
        return 0
    runner = SubprocessRunner(os.environ)
    with (
        tempfile.TemporaryDirectory(prefix="agentbox-bench-") as tmp,
        btrfs_loop(Path(tmp) / "fs.img", Path(tmp) / "mnt", size="3G") as mnt,
    ):
        small, large = mnt / "rootfs-200", mnt / "rootfs-400"
        make_rootfs(small, 200)
        make_rootfs(large, 400)
        dst = mnt / "dst"
        task = mnt / "task"
        run(["btrfs", "filesystem", "sync", str(mnt)])  # let the writes settle before timing

        def bare(src: Path) -> Callable[[], None]:
            return lambda: run(["btrfs", "subvolume", "snapshot", str(src), str(dst)])

        def drop_dst() -> None:
            run(["btrfs", "subvolume", "delete", str(dst)])

        def ours(src: Path) -> Callable[[], None]:
            def action() -> None:
                taskroot.materialize(Backend.BTRFS_SNAPSHOT, src, task, runner)

            return action

        def drop_task() -> None:
            taskroot.cleanup(taskroot.layout(Backend.BTRFS_SNAPSHOT, task), runner)

        def copy() -> None:
            dst.mkdir()
            # --reflink=never: coreutils >= 9 reflinks by default on btrfs; this is a real copy
            run(["cp", "-a", "--reflink=never", f"{small}/.", str(dst)])
            subprocess.run(["sync"], check=True)

        bare_ms = median_ms(bare(small), drop_dst, RUNS)
        ours_ms = median_ms(ours(small), drop_task, RUNS)
        copy_ms = median_ms(copy, lambda: run(["rm", "-rf", str(dst)]), 3)
        large_ms = median_ms(ours(large), drop_task, RUNS)
    print(f"task root by btrfs snapshot, median of {RUNS} runs (cp -a: of 3)")
    print(f"  bare btrfs subvolume snapshot (200 MB)  {bare_ms:8.1f} ms  1.00x")
    print(f"  agentbox btrfs-snapshot task root       {ours_ms:8.1f} ms  {ours_ms / bare_ms:4.2f}x"
          "  (target <= 2x)")  # fmt: skip
    print(f"  cp -a (real copy) of the same rootfs    {copy_ms:8.1f} ms  "
          f"task root is {copy_ms / ours_ms:5.0f}x faster (target >= 50x)")  # fmt: skip
    print(f"  task root from a 400 MB rootfs          {large_ms:8.1f} ms  "
          f"{large_ms / ours_ms:4.2f}x of 200 MB (target: flat, ~1x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
