"""Container mode against the rootless `podman run` it wraps, as ratios in one run.

As the ordinary test user (root runs this through runuser, with world-readable copies of the
packages): the bare `podman run --rm --userns keep-id IMAGE true`, then `agentbox container --
true` cold (no sidecar runs and its /nix overlay is kept mounted, as after the idle grace; a
task that ends before container.plan.SIDECAR_DEFER_SECONDS starts none), warm (the sidecar
runs and is reused), a first start (nothing mounted: the overlay is mounted first, as once per
30 idle minutes), and a cold `sleep 1` against the bare `sleep 1` (its sidecar starts beside
it). Targets: cold <= 1.5x, warm <= 1.1x bare. Prints numbers; never fails on them.
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

RUNS = int(os.environ.get("BENCH_RUNS", "10"))
IMAGE = "localhost/agentbox:latest"


def main() -> int:
    pw = test_user()
    if pw is None:
        print(f"container bench skipped: no user {USER} (scripts/test creates it)")
        return 0
    if os.geteuid() != 0:
        print("container bench skipped: it runs as root and switches to the test user")
        return 0
    with tempfile.TemporaryDirectory(prefix="agentbox-bench-") as tmp:
        os.chmod(tmp, 0o755)
        code = user_code(Path(tmp))
        project = Path(tmp) / "bench-project"
        project.mkdir()
        os.chown(project, pw.pw_uid, pw.pw_gid)
        user = as_user(pw, code)

        def timed(argv: list[str], **extra: str) -> float:
            start = time.perf_counter()
            done = subprocess.run([*user, *(f"{k}={v}" for k, v in extra.items()), *argv],
                                  cwd=project, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, check=False)  # fmt: skip
            elapsed = (time.perf_counter() - start) * 1000
            if done.returncode != 0:
                sys.exit(f"container bench: {shlex.join(argv)} exited {done.returncode}:\n"
                         f"{done.stderr}")  # fmt: skip
            return elapsed

        agentbox = ["python3", "-m", "agentbox_cli", "container", "--", "true"]
        bare = ["podman", "run", "--rm", "--userns=keep-id", IMAGE, "true"]
        timed(bare)  # warm the image's layers
        state = Path(pw.pw_dir) / ".local/state/agentbox/workspaces"

        def reap() -> None:  # what the idle reaper does once the grace is over
            for ws in state.glob("bench-project-*"):
                timed(["python3", "-m", "agentbox_cli", "internal", "sidecar-reap", "--",
                       str(ws), IMAGE, "0"])  # fmt: skip

        sidecar = ["python3", "-m", "agentbox_cli", "container", "sidecar"]
        nap = ["python3", "-m", "agentbox_cli", "container", "--", "sleep", "1"]
        bare_nap = [*bare[:-1], "sleep", "1"]
        grace = {"AGENTBOX_SIDECAR_IDLE_GRACE": "600"}
        bare_ms, first_ms, warm_ms, cold_ms, nap_ms, bare_nap_ms = [], [], [], [], [], []
        for _ in range(RUNS):
            bare_ms.append(timed(bare))
            bare_nap_ms.append(timed(bare_nap))
            reap()
            first_ms.append(timed(agentbox, **grace))  # mounts the overlay, starts no sidecar
            cold_ms.append(timed(agentbox, **grace))  # the overlay kept, no sidecar
            nap_ms.append(timed(nap, **grace))  # the overlay kept; a sidecar starts beside it
            timed(sidecar)  # up (it is, after the nap; `container sidecar` makes sure)
            warm_ms.append(timed(agentbox, **grace))  # reuses it
        reap()
        # the tasks' own reapers sleep out their grace: nothing is left for them to do
        subprocess.run(["pkill", "-u", USER, "-f", "agentbox_cli internal sidecar-reap"],
                       check=False)  # fmt: skip
    base, nap_base = statistics.median(bare_ms), statistics.median(bare_nap_ms)
    print(f"container mode, median of {RUNS} (as {USER}; targets: cold <= 1.5x, warm <= 1.1x)")
    for label, samples, against in (
        ("podman run --rm --userns keep-id", bare_ms, base),
        ("agentbox container -- true, warm", warm_ms, base),
        ("agentbox container -- true, cold", cold_ms, base),
        ("  first start (overlay mounted too)", first_ms, base),
        ("podman run ... sleep 1", bare_nap_ms, nap_base),
        ("agentbox container -- sleep 1, cold", nap_ms, nap_base),
    ):
        ms = statistics.median(samples)
        print(f"  {label:<36} {ms:7.1f} ms  {ms / against:4.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
