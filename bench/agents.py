"""Parallel agents of one project: what starting one more costs, in time and in disk.

As the ordinary test user (root mounts the btrfs and switches to the user, as bench/container.py
does), with the state dir on a loop-mounted btrfs (so that an agent's state is forked by
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

from testuser import USER, as_user, test_user, user_code

from agentbox_testing import btrfs_loop

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DATA_GB = float(os.environ.get("BENCH_AGENTS_GB", "2"))
AGENTS = 4
IMAGE = "localhost/agentbox:latest"
GIB = 1024**3
CHUNK = 64 * 1024**2


def run(argv: list[str], cwd: Path) -> float:
    """Milliseconds ``argv`` took; a failure ends the bench with its output."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, check=False)  # fmt: skip
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
    pw = test_user()
    if pw is None:
        print(f"agents bench skipped: no user {USER} (scripts/test creates it)")
        return 0
    if os.geteuid() != 0:
        print("agents bench skipped: it needs root for a loop-mounted btrfs")
        return 0
    starts: list[list[float]] = [[] for _ in range(AGENTS)]
    with (
        tempfile.TemporaryDirectory(prefix="agentbox-bench-") as tmp,
        btrfs_loop(Path(tmp) / "fs.img", Path(tmp) / "mnt", size=f"{int(DATA_GB) + 6}G") as mnt,
    ):
        os.chmod(tmp, 0o755)
        os.chown(mnt, pw.pw_uid, pw.pw_gid)
        project = Path(tmp) / "project"
        project.mkdir()
        os.chown(project, pw.pw_uid, pw.pw_gid)
        user = as_user(pw, user_code(Path(tmp)), XDG_STATE_HOME=os.fspath(mnt / "state"),
                       GIT_CONFIG_GLOBAL=os.devnull)  # fmt: skip
        if subprocess.run([*user, "podman", "image", "exists", IMAGE], cwd="/",
                          check=False).returncode != 0:  # fmt: skip
            print(f"agents bench skipped: {USER} has no {IMAGE} (the integration tests load it)")
            return 0
        # rootless Podman's pause process holds the mount namespace its containers start in:
        # one started before this mount would not see it
        run([*user, "podman", "system", "migrate"], project)
        for git in (["init", "--quiet", "--initial-branch=main"],
                    ["-c", "user.name=b", "-c", "user.email=b@example.org", "commit",
                     "--quiet", "--allow-empty", "-m", "first"]):  # fmt: skip
            run([*user, "git", *git], project)
        agentbox = [*user, "python3", "-m", "agentbox_cli"]
        run([*agentbox, "container", "--", "true"], project)  # the project, used once
        [state] = (mnt / "state/agentbox/workspaces").iterdir()
        seed(state, int(DATA_GB * GIB))
        subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", os.fspath(state / "cargo"),
                        os.fspath(state / "libkrun-nix.raw")], check=True)  # fmt: skip
        before = used_bytes(mnt)
        used: list[int] = []
        try:
            for r in range(RUNS):
                for n in range(AGENTS):
                    argv = [*agentbox, "--agent", f"r{r}a{n + 1}", "container", "--", "true"]
                    starts[n].append(run(argv, project))
                    if r == 0:
                        used.append(used_bytes(mnt))
                        forked = state.parent / f"{state.name}-agent-r0a{n + 1}/libkrun-nix.raw"
                        if not forked.is_file():  # the figures would be of empty agents
                            sys.exit(f"agents bench: agent r0a{n + 1} was not forked")
        finally:
            # what the idle reaper does after the grace: each sidecar's overlay unmounted, so
            # that the loop filesystem can go
            for ws in (mnt / "state/agentbox/workspaces").iterdir():
                run([*agentbox, "internal", "sidecar-reap", "--", os.fspath(ws), IMAGE, "0"],
                    project)  # fmt: skip
            subprocess.run(["pkill", "-u", USER, "-f", f"sidecar-reap -- {mnt}"], check=False)
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
