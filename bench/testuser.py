"""What the benches that run agentbox as the ordinary test user share: that user, and a
world-readable, compiled copy of the packages for its interpreter (root runs the bench and
switches to the user with runuser; the user cannot read root's venv)."""

from __future__ import annotations

import importlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

USER = os.environ.get("AGENTBOX_TEST_USER", "agentbox-test")
PACKAGES = ["agentbox_cli", "agentbox_state", "agentbox_storage", "agentbox_podman",
            "agentbox_krun", "loftd", "agentbox_guest_init"]  # fmt: skip


def test_user() -> pwd.struct_passwd | None:
    """The test user (None: there is none; scripts/test creates it)."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        return None


def user_code(where: Path, *, extra: tuple[str, ...] = ()) -> Path:
    """``where/code``: the packages (and the modules ``extra``), compiled as an install
    compiles them (the test user cannot write the copy's ``__pycache__``, and recompiling every
    module on every run is no user's start-up), readable by everyone."""
    code = where / "code"
    for name in (*PACKAGES, *extra):
        module = importlib.import_module(name)
        assert module.__file__ is not None
        shutil.copytree(Path(module.__file__).parent, code / name)
    subprocess.run(["python3", "-m", "compileall", "-q", os.fspath(code)], check=True)
    subprocess.run(["chmod", "-R", "a+rX", os.fspath(code)], check=True)
    return code


def as_user(pw: pwd.struct_passwd, code: Path, **env: str) -> list[str]:
    """The argv prefix that runs a command as ``pw`` in a clean environment that imports
    ``code``."""
    extra = [f"{k}={v}" for k, v in env.items()]
    return ["runuser", "-u", pw.pw_name, "--", "env", "-i", f"HOME={pw.pw_dir}",
            "PATH=/usr/bin:/bin", f"PYTHONPATH={code}", *extra]  # fmt: skip
