"""Parallel agents of one project: what starting one more costs, in time and in disk.

As root, with the state dir on a loop-mounted btrfs (so that an agent's state is forked by
reflink) and a git repository as the project: the project is used once (`agentbox container
-- true`), its state is given data (BENCH_AGENTS_GB, default 2: a sparse 64 GiB raw disk and a
cargo dir), then agents a1 to a4 are started one after the other (`agentbox --agent aN
container -- true`: the worktree added, the state forked, the task run). Goals: the 4th start
<= 1.2x the 1st; the filesystem's used bytes with 4 agents <= 1.1x those with 1 (they wrote
nothing of their own). BENCH_RUNS rounds (default 3) of four new agents each; medians. Prints
numbers; never fails on them.
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agentbox_testing import btrfs_loop

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DATA_GB = float(os.environ.get("BENCH_AGENTS_GB", "2"))
AGENTS = 4
IMAGE = "localhost/agentbox:latest"
GIB = 1024**3
CHUNK = 64 * 1024**2


def run(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Milliseconds ``argv`` took; a failure ends the bench with its output."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, check=False)  # fmt: skip
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        sys.exit(f"agents bench: {shlex.join(argv)} exited {done.returncode}:\n{done.stderr}")
    return elapsed


def used_bytes(mnt: Path) -> int:
    """What the filesystem has allocated, once its delayed writes are on disk."""
    subprocess.run(["btrfs", "filesystem", "sync", os.fspath(mnt)], check=True,
                   capture_output=True)  # fmt: skip
    st = os.statvfs(mnt)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def seed(state: Path, data: int) -> None:
    """The project's state given ``data`` bytes: three quarters in a sparse raw disk (in
    64 MiB extents spread over it), the rest in its cargo dir."""
    block = os.urandom(CHUNK)
    chunks = max(1, data * 3 // 4 // CHUNK)
    with open(state / "libkrun-nix.raw", "wb") as f:
        f.truncate(64 * GIB)
        for i in range(chunks):
            f.seek(i * (64 * GIB // chunks))
            f.write(block)
    registry = state / "cargo" / "registry"
    registry.mkdir(parents=True, exist_ok=True)
    for i in range(max(1, data // 4 // CHUNK)):
        (registry / f"crate-{i}.tar").write_bytes(block)


def main() -> int:
    if os.geteuid() != 0:
        print("agents bench skipped: it needs root for a loop-mounted btrfs")
        return 0
    if subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode != 0:
        print(f"agents bench skipped: no {IMAGE} (agentbox image build makes it)")
        return 0
    starts: list[list[float]] = [[] for _ in range(AGENTS)]
    with (
        tempfile.TemporaryDirectory(prefix="agentbox-bench-") as tmp,
        btrfs_loop(Path(tmp) / "fs.img", Path(tmp) / "mnt", size=f"{int(DATA_GB) + 6}G") as mnt,
    ):
        project, home = Path(tmp) / "project", Path(tmp) / "home"
        project.mkdir()
        home.mkdir()
        env = {"HOME": os.fspath(home), "XDG_STATE_HOME": os.fspath(mnt / "state"),
               "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "GIT_CONFIG_GLOBAL": os.devnull}  # fmt: skip
        for git in (["init", "--quiet", "--initial-branch=main"],
                    ["-c", "user.name=b", "-c", "user.email=b@example.org", "commit",
                     "--quiet", "--allow-empty", "-m", "first"]):  # fmt: skip
            run(["git", *git], env, project)
        agentbox = [sys.executable, "-m", "agentbox_cli"]
        run([*agentbox, "container", "--", "true"], env, project)  # the project, used once
        [state] = (mnt / "state/agentbox/workspaces").iterdir()
        seed(state, int(DATA_GB * GIB))
        before = used_bytes(mnt)
        used: list[int] = []
        try:
            for r in range(RUNS):
                for n in range(AGENTS):
                    argv = [*agentbox, "--agent", f"r{r}a{n + 1}", "container", "--", "true"]
                    starts[n].append(run(argv, env, project))
                    if r == 0:
                        used.append(used_bytes(mnt))
        finally:
            # what the idle reaper does after the grace: each sidecar's overlay unmounted, so
            # that the loop filesystem can go
            for ws in (mnt / "state/agentbox/workspaces").iterdir():
                run([*agentbox, "internal", "sidecar-reap", "--", os.fspath(ws), IMAGE, "0"],
                    env, project)  # fmt: skip
            subprocess.run(["pkill", "-f", f"sidecar-reap -- {mnt}"], check=False)
    one, four = used[0] - before, used[-1] - before
    first = statistics.median(starts[0])
    print(f"parallel agents, {DATA_GB:g} GB of project state on btrfs, median of {RUNS} rounds "
          "(goals: 4th start <= 1.2x the 1st, used disk with 4 agents <= 1.1x with 1)")  # fmt: skip
    for n, samples in enumerate(starts):
        ms = statistics.median(samples)
        print(f"  start of agent {n + 1} (worktree, fork, task)  {ms:7.1f} ms  {ms / first:4.2f}x")
    total_one, total_four = before + one, before + four
    print(f"  disk used: project {before / GIB:5.2f} GiB; with 1 agent {total_one / GIB:5.2f} "
          f"GiB; with 4 {total_four / GIB:5.2f} GiB ({total_four / total_one:4.2f}x): the 1st "
          f"agent added {one / 1024**2:5.1f} MiB, all four {four / 1024**2:5.1f} MiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
