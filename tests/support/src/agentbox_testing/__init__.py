"""This repository's test harness: what a test needs from the CI host, and how it gets it.

Each ``require_*`` skips the calling test when the host lacks the capability (saying what is
missing and how to get it), or fails it under ``AGENTBOX_CI_ENFORCE=1``. The ones that need root
also check that the running test carries the marker of its tier (``agentbox_testing.plugin``),
so a test cannot slip a real-tool need into the pure tier unnoticed.

Not published: nox installs it from ``tests/support`` into the test sessions. The recording
runner, which other tools' tests may use too, stays in ``agentbox_state.testing``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

ENFORCE_VAR = "AGENTBOX_CI_ENFORCE"
TEST_USER_VAR = "AGENTBOX_TEST_USER"
DEFAULT_TEST_USER = "agentbox-test"


def enforced(environ: Mapping[str, str] | None = None) -> bool:
    """True when CI asks that a missing capability fail the run instead of skipping (the
    variable is 1, true, yes or on; unset, 0, false, no or off mean no)."""
    value = (os.environ if environ is None else environ).get(ENFORCE_VAR, "0").strip().lower()
    if value not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        raise ValueError(f"{ENFORCE_VAR}={value!r}: expected 1/true/yes/on or 0/false/no/off")
    return value in {"1", "true", "yes", "on"}


def require(available: bool, reason: str, *, host_hardware: bool = False) -> None:
    """Skip the calling test when a capability is missing, or fail under ``AGENTBOX_CI_ENFORCE``.

    ``reason`` says what is missing and how to get it, so the skip explains itself.
    ``host_hardware``: no setup step can provide it (a KVM that boots a guest, on a CI host
    whose /dev/kvm is kvm-pvm), so it skips even under enforcement, saying so.
    """
    if available:
        return
    import pytest

    if host_hardware:
        pytest.skip(f"{reason} (host hardware: skipped even with {ENFORCE_VAR}=1)")
    if enforced():
        pytest.fail(f"{ENFORCE_VAR}=1 and a required capability is missing: {reason}")
    pytest.skip(reason)


def test_user() -> str:
    """The ordinary user rootless tests run as (scripts/test creates it when run as root)."""
    return os.environ.get(TEST_USER_VAR, DEFAULT_TEST_USER)


def require_root(why: str) -> None:
    from agentbox_testing.plugin import check_marked

    check_marked("root", f"needs root: {why}")
    require(os.geteuid() == 0, f"needs root: {why}")


def require_test_user() -> str:
    """Skip (or fail under enforcement) unless we are root and the test user exists."""
    import pwd
    import shutil

    from agentbox_testing.plugin import check_marked

    user = test_user()
    check_marked("root", f"runs as the test user {user} through runuser")
    try:
        pwd.getpwnam(user)
        exists = True
    except KeyError:
        exists = False
    require(
        os.geteuid() == 0 and exists and shutil.which("runuser") is not None,
        f"rootless tests need root, runuser and the user {user} (scripts/test creates it)",
    )
    return user


def run_as_user(
    code: str,
    *,
    packages: Sequence[str],
    cwd: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as the ordinary test user with copies of ``packages`` importable.

    The packages are copied from where this interpreter imports them into a world-readable
    temporary dir, so the test does not depend on the checkout or venv being readable by the
    user; the system's python3 runs the code. Returns the finished process (not checked).
    """
    import importlib
    import pwd
    import shutil
    import tempfile

    user = require_test_user()
    home = pwd.getpwnam(user).pw_dir
    with tempfile.TemporaryDirectory(prefix="agentbox-user-code-") as tmp:
        os.chmod(tmp, 0o755)
        for name in packages:
            module = importlib.import_module(name)
            assert module.__file__ is not None
            shutil.copytree(
                Path(module.__file__).parent,
                Path(tmp) / name,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        for root, dirs, files in os.walk(tmp):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        child_env = {
            "HOME": home, "USER": user, "LOGNAME": user, "PYTHONPATH": tmp,
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8", **(env or {}),
        }  # fmt: skip
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
        return subprocess.run(
            ["runuser", "-u", user, "--", "env", "-i",
             *(f"{k}={v}" for k, v in child_env.items()), python, "-c", code],
            cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip


@contextmanager
def btrfs_loop(
    image: Path, mountpoint: Path, *, size: str = "4G", options: str = "user_subvol_rm_allowed"
) -> Iterator[Path]:
    """A real btrfs filesystem: a sparse file, mkfs.btrfs, loop-mounted (root only)."""
    import shutil

    from agentbox_testing.plugin import check_marked

    check_marked("btrfs", "mounts a loop-device btrfs")
    require_root("mounting a loop-device btrfs")
    for tool in ("mkfs.btrfs", "mount", "umount"):
        require(shutil.which(tool) is not None, f"{tool} is missing (apt-get install btrfs-progs)")
    subprocess.run(["truncate", "-s", size, os.fspath(image)], check=True)
    subprocess.run(["mkfs.btrfs", "--quiet", os.fspath(image)], check=True, capture_output=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", f"loop,{options}", os.fspath(image), os.fspath(mountpoint)],
                   check=True)  # fmt: skip
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", os.fspath(mountpoint)], check=False)
        image.unlink(missing_ok=True)


def host_root(dest: Path, *programs: str) -> Path:
    """A minimal root filesystem at ``dest``: the host's ``programs`` (absolute paths) and the
    shared libraries ``ldd`` lists for them, at the same paths, so they run inside a container
    or a guest without an image. Returns ``dest``."""
    import re
    import shutil

    require(shutil.which("ldd") is not None, "ldd is missing (apt-get install libc-bin)")
    wanted: set[str] = set()
    for program in programs:
        wanted.add(program)
        listed = subprocess.run(["ldd", program], capture_output=True, text=True, check=False)
        wanted |= set(re.findall(r"(/\S+) \(0x", listed.stdout))
    for path in sorted(wanted):
        real = Path(path).resolve()
        target = dest / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(real, target)
    for extra in ("proc", "sys", "dev", "tmp"):
        (dest / extra).mkdir(parents=True, exist_ok=True)
    return dest
