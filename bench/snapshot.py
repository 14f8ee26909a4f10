"""`agentbox snapshot create` of a project whose two 64 GiB sparse disks hold data (root only).

- the whole verb (facts, the reflink probe, plan, clones, manifest; in-process, no interpreter
  start-up), with 2 GB of data against the goal of <= 50 ms;
- the same with 8 GB of data (goal: flat, cost flat in apparent size and nearly so in data);
- against a bare `cp --reflink=always` of the two disks (what the clones alone cost).
BENCH_SNAPSHOT_GB (default "2,8") sets the amounts of data; prints numbers, never fails.
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

from agentbox_cli.main import VERBS
from agentbox_cli.schema import SPEC
from agentbox_state.cli.app import main as app_main
from agentbox_state.workspace import Workspace
from agentbox_testing import btrfs_loop

RUNS = int(os.environ.get("BENCH_RUNS", "15"))
AMOUNTS = [int(x) for x in os.environ.get("BENCH_SNAPSHOT_GB", "2,8").split(",")]
GIB = 1024**3
CHUNK = 64 * 1024**2
DISKS = ("microvm-nix.raw", "microvm-containers.raw")


def fill(path: Path, data_bytes: int) -> None:
    """A 64 GiB sparse file holding ``data_bytes`` in 64 MiB extents spread over it."""
    block = os.urandom(CHUNK)
    chunks = max(1, data_bytes // CHUNK)
    stride = (64 * GIB) // chunks
    with open(path, "wb") as f:
        f.truncate(64 * GIB)
        for i in range(chunks):
            f.seek(i * stride)
            f.write(block)


def median_ms(action: Callable[[], None], undo: Callable[[], None]) -> float:
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
        undo()
    return statistics.median(samples) * 1000


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def bench(mnt: Path, gigabytes: int) -> tuple[float, float]:
    home = mnt / f"home-{gigabytes}"
    project = home / "project"
    project.mkdir(parents=True)
    state = home / ".local/state/agentbox/workspaces" / Workspace.from_path(project).key
    state.mkdir(parents=True)
    for disk in DISKS:
        fill(state / disk, gigabytes * GIB // len(DISKS))
    (state / "cargo").mkdir()
    (state / "cargo" / "index").write_text("registry\n")
    run(["btrfs", "filesystem", "sync", str(mnt)])
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    os.chdir(project)

    def create() -> None:
        out: list[str] = []
        if app_main(SPEC, VERBS, ["snapshot", "create", "b"], env, out=out.append,
                    err=out.append) != 0:  # fmt: skip
            raise SystemExit("\n".join(out))

    def delete() -> None:
        run(["rm", "-rf", str(state / "snapshots" / "b")])

    bare_dst = mnt / "bare"

    def bare() -> None:
        bare_dst.mkdir()
        for disk in DISKS:
            run(["cp", "--reflink=always", str(state / disk), str(bare_dst / disk)])

    ours = median_ms(create, delete)
    raw = median_ms(bare, lambda: run(["rm", "-rf", str(bare_dst)]))
    run(["rm", "-rf", str(home)])
    return ours, raw


def main() -> int:
    if os.geteuid() != 0:
        print("snapshot bench skipped: it needs root for a loop-mounted btrfs")
        return 0
    size = f"{max(AMOUNTS) + 4}G"
    with (
        tempfile.TemporaryDirectory(prefix="agentbox-bench-") as tmp,
        btrfs_loop(Path(tmp) / "fs.img", Path(tmp) / "mnt", size=size) as mnt,
    ):
        results = {gb: bench(mnt, gb) for gb in AMOUNTS}
        os.chdir("/")
    first = AMOUNTS[0]
    print(f"agentbox snapshot create, two 64 GiB sparse disks, median of {RUNS} runs")
    for gb, (ours, raw) in results.items():
        goal = "(goal <= 50 ms)" if gb == first else f"{ours / results[first][0]:4.2f}x of " \
            f"{first} GB (goal: flat)"  # fmt: skip
        print(f"  {gb:2d} GB of data: {ours:7.1f} ms  {goal}; bare cp --reflink=always of the "
              f"disks {raw:6.1f} ms ({ours / raw:4.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
