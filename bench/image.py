"""The workstation image: its size, the first build, rebuilds, and container mode with it.

As root, in a throwaway Podman/Buildah storage and a fresh cache dir (so the first build is a
real first build, debootstrap included, and nothing of the machine's own images is touched):
`agentbox image build --suite trixie` from nothing, again with nothing changed (goal <= 1 s),
and after a change to the guest init's source (goal <= 30 s). Then, as the ordinary test user
with the image loaded into that user's storage, `agentbox container -- true` warm (the sidecar
is up) against bare `podman run --rm --userns keep-id IMAGE true` (goal <= 1.5x).

Prints numbers; never fails on them. BENCH_IMAGE_FIRST=0 skips the whole first build (minutes)
and uses the cached stages of the machine's own storage instead.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testuser import USER, as_user, test_user, user_code

RUNS = int(os.environ.get("BENCH_RUNS", "10"))
IMAGE = "localhost/agentbox-bench:latest"
FIRST = os.environ.get("BENCH_IMAGE_FIRST", "1") != "0"
AGENTBOX = Path(sys.executable).parent / "agentbox"


def build(env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([os.fspath(AGENTBOX), "image", "build", "--suite", "trixie", "--tag",
                           IMAGE], env=env, capture_output=True, text=True)  # fmt: skip
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"image bench: the build failed:\n{done.stderr}")
    for line in done.stderr.splitlines():
        if "warning" in line:  # a skipped stage: the numbers are not the whole image's
            print(f"  {line}")
    return took


def changed_guest_init(tmp: Path) -> Path:
    """A copy of the guest init's source with one more line: its stage key changes."""
    import agentbox_guest_init

    assert agentbox_guest_init.__file__ is not None
    copy = tmp / "changed" / "agentbox_guest_init"
    shutil.copytree(Path(agentbox_guest_init.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    with (copy / "__init__.py").open("a") as f:
        f.write(f"# bench change {time.time()}\n")
    return copy.parent


def image_size(env: dict[str, str]) -> int:
    done = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", IMAGE],
                          env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout.strip())


def warm_ratio(env: dict[str, str], tmp: Path) -> None:
    pw = test_user()
    if pw is None:
        print(f"  container run skipped: no user {USER} (scripts/test creates it)")
        return
    os.chmod(tmp, 0o755)
    archive = tmp / "image.tar"
    code = user_code(tmp)
    project = tmp / "bench-image-project"
    project.mkdir()
    os.chown(project, pw.pw_uid, pw.pw_gid)
    user = as_user(pw, code, AGENTBOX_IMAGE=IMAGE)

    def timed(argv: list[str], **extra: str) -> float:
        start = time.perf_counter()
        subprocess.run([*user, *(f"{k}={v}" for k, v in extra.items()), *argv], cwd=project,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)  # fmt: skip
        return (time.perf_counter() - start) * 1000

    ident = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", IMAGE], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    if subprocess.run([*user, "podman", "image", "exists", ident], cwd="/tmp").returncode:
        subprocess.run(["podman", "save", "--quiet", "--format", "oci-archive", "-o",
                        os.fspath(archive), IMAGE], env=env, check=True)  # fmt: skip
        archive.chmod(0o644)
        subprocess.run([*user, "podman", "load", "--quiet", "-i", os.fspath(archive)],
                       cwd="/tmp", capture_output=True, text=True, check=True)  # fmt: skip
    subprocess.run([*user, "podman", "tag", ident, IMAGE], cwd="/tmp", check=True)
    agentbox = ["python3", "-m", "agentbox_cli", "container", "--", "true"]
    bare = ["podman", "run", "--rm", "--userns=keep-id", IMAGE, "true"]
    try:
        timed(bare)
        timed(agentbox, AGENTBOX_SIDECAR_IDLE_GRACE="120")  # starts the sidecar
        bare_ms = [timed(bare) for _ in range(RUNS)]
        warm_ms = [timed(agentbox, AGENTBOX_SIDECAR_IDLE_GRACE="120") for _ in range(RUNS)]
    finally:
        state = Path(pw.pw_dir) / ".local/state/agentbox/workspaces"
        for ws in state.glob("bench-image-project-*"):
            timed(["python3", "-m", "agentbox_cli", "internal", "sidecar-reap", "--", str(ws),
                   IMAGE, "0"])  # fmt: skip
        subprocess.run([*user, "podman", "rmi", "--force", IMAGE], cwd="/tmp", check=False,
                       capture_output=True)  # fmt: skip
    b, w = statistics.median(bare_ms), statistics.median(warm_ms)
    print(f"  podman run --rm --userns keep-id (as {USER}) {b:7.1f} ms  1.00x")
    print(f"  agentbox container -- true, warm         {w:7.1f} ms  {w / b:4.2f}x (goal <= 1.5x)")


def main() -> int:
    if os.geteuid() != 0:
        print("image bench skipped: it builds as root (debootstrap) and switches to the test user")
        return 0
    with tempfile.TemporaryDirectory(prefix="agentbox-bench-image-", dir="/var/tmp") as tmp_s:
        tmp = Path(tmp_s)
        os.chmod(tmp, 0o755)  # the test user reads the saved image and the code below it
        env = {**os.environ}
        if FIRST:
            storage = tmp / "storage.conf"
            storage.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{tmp}/graph"\n'
                               f'runroot = "{tmp}/run"\n')  # fmt: skip
            env.update(CONTAINERS_STORAGE_CONF=os.fspath(storage),
                       XDG_CACHE_HOME=os.fspath(tmp / "cache"))  # fmt: skip
        print("image build --suite trixie" + (" (fresh storage and cache)" if FIRST else ""))
        first = build(env)
        label = "first build (debootstrap included)" if FIRST else "build on the cached stages"
        print(f"  {label:<40} {first:7.1f} s")
        print(f"  {'rebuild, nothing changed':<40} {build(env):7.1f} s  (goal <= 1 s)")
        print(f"  {'image size':<40} {image_size(env) / 1e9:7.2f} GB")
        (tmp / "user").mkdir()
        warm_ratio(env, tmp / "user")
        changed = {**env, "PYTHONPATH": os.fspath(changed_guest_init(tmp))}
        print(
            f"  {'rebuild after a guest-init change':<40} {build(changed):7.1f} s  (goal <= 30 s)"
        )
        # only the throwaway storage's images (never `podman system reset`: it touches more)
        subprocess.run(["podman", "rmi", "--all", "--force"] if FIRST else
                       ["podman", "rmi", IMAGE], env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
