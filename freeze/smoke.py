"""Smoke-test and time the frozen guest init: it runs, prints its version under both names,
rejects a bad verb in one line, and how long it takes from process start to exec of the user's
command in container mode.

Start-to-exec is (guest init + /bin/true) minus (/bin/true alone), median of many runs:
- as an ordinary user (nobody): the non-root path, env only;
- as root with the host contract, which writes /etc/passwd, /etc/group and the dev home and
  drops privileges: done in a private mount namespace over copies, so the host is untouched.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = int(os.environ.get("FREEZE_RUNS", "30"))
LIMIT_MS = 80.0
ROOT_PART = "--as-root-in-namespace"


def median_ms(argv: list[str], env: dict[str, str]) -> float:
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def smoke(binary: Path) -> None:
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("agentbox-guest-init "), version.stdout
    loftd = binary.with_name("loftd-guest-init")
    if not loftd.exists():
        loftd.symlink_to(binary.name)
    lv = subprocess.run([loftd, "--version"], capture_output=True, text=True, check=True)
    assert lv.stdout.startswith("loftd-guest-init "), lv.stdout
    bad = subprocess.run([binary, "explode"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2, bad.returncode
    assert bad.stderr.count("\n") == 1, bad.stderr


def as_root_in_namespace(binary: Path) -> float:
    """Runs inside `unshare --mount`: bind copies over /etc/passwd and /etc/group, a tmpfs on
    /home and /run/user, then time the root path with the contract."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("passwd", "group"):
            copy = Path(tmp) / name
            copy.write_text(Path(f"/etc/{name}").read_text())
            subprocess.run(["mount", "--bind", str(copy), f"/etc/{name}"], check=True)
        os.makedirs("/run/user", exist_ok=True)
        for target in ("/home", "/run/user"):
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", target], check=True)
        env = {"PATH": "/usr/bin:/bin", "AGENTBOX_HOST_UID": "4242", "AGENTBOX_HOST_GID": "4242"}
        check = subprocess.run([str(binary), "container", "enter", "--", "id", "-u"], env=env,
                               capture_output=True, text=True, check=True)  # fmt: skip
        assert check.stdout == "4242\n", check.stdout
        true = median_ms(["/bin/true"], env)
        return median_ms([str(binary), "container", "enter", "--", "/bin/true"], env) - true


def main() -> int:
    binary = Path(sys.argv[1]).resolve()
    if sys.argv[2:] == [ROOT_PART]:
        print(f"{as_root_in_namespace(binary):.1f}")
        return 0
    smoke(binary)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {"PATH": "/usr/bin:/bin"}
    user_ms = median_ms([*nobody, str(binary), "container", "enter", "--", "/bin/true"], env)
    user_ms -= median_ms([*nobody, "/bin/true"], env)
    print(f"frozen guest init {binary}: start to exec of the command, median of {RUNS}")
    print(f"  container enter as an ordinary user:      {user_ms:6.1f} ms (limit {LIMIT_MS:g})")
    if os.geteuid() == 0:
        out = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                              __file__, str(binary), ROOT_PART], capture_output=True, text=True,
                             check=True)  # fmt: skip
        print(f"  container enter as root with the contract: {float(out.stdout):6.1f} ms "
              f"(limit {LIMIT_MS:g})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
