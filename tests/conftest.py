"""Shared fixtures for the top-level tests: the installed commands and an isolated home."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from agentbox_state.testing import require, require_test_user

BIN = Path(sys.executable).parent
TEST_USER = os.environ.get("AGENTBOX_TEST_USER", "agentbox-test")


def installed(name: str) -> Path:
    """A console script of this venv; the integration session installs every package."""
    path = BIN / name
    require(path.exists(), f"{name} is not installed in {BIN}; run the tests through nox")
    return path


class Home:
    """A fresh HOME with a project directory, and a way to run the installed commands in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.project = root / "work" / "project"
        self.home.mkdir()
        self.project.mkdir(parents=True)

    @property
    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def config(self, app: str, text: str) -> Path:
        path = self.home / ".config" / app / f"{app}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def run(
        self, *argv: str | Path, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [os.fspath(a) for a in argv],
            cwd=cwd or self.project,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


@pytest.fixture(scope="session")
def agentbox() -> Path:
    return installed("agentbox")


@pytest.fixture(scope="session")
def loftd() -> Path:
    return installed("loftd")


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    return BIN


@pytest.fixture(scope="session")
def test_user() -> str:
    return TEST_USER


@pytest.fixture
def tree() -> Callable[[Path], set[str]]:
    """Every path under a directory, relative to it: to prove a command created nothing."""

    def list_tree(root: Path) -> set[str]:
        return {os.path.relpath(p, root) for p in root.rglob("*")}

    return list_tree


AGENTBOX_IMAGE = "localhost/agentbox:latest"


def as_user(user: str, *argv: str, cwd: str = "/tmp") -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as the ordinary test user with a clean environment."""
    import pwd

    home = pwd.getpwnam(user).pw_dir
    return subprocess.run(
        ["runuser", "-u", user, "--", "env", "-i", f"HOME={home}", f"USER={user}",
         "PATH=/usr/local/bin:/usr/bin:/bin", *argv],
        cwd=cwd, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip


@pytest.fixture(scope="session")
def run_as() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_as(user, *argv)``: ``as_user`` for test modules (they cannot import conftest)."""
    return as_user


@pytest.fixture(scope="session")
def user_image(bin_dir: Path) -> str:
    """Build the image as root (cached stages), then load it into the test user's storage."""
    user = require_test_user()
    require(shutil.which("podman") is not None, "podman is missing (apt-get install podman)")
    built = subprocess.run([str(bin_dir / "agentbox"), "image", "build"], capture_output=True,
                           text=True, check=False, timeout=3600)  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert built.stdout == f"{AGENTBOX_IMAGE}\n"
    with tempfile.TemporaryDirectory(prefix="agentbox-image-") as tmp:
        os.chmod(tmp, 0o755)
        archive = Path(tmp) / "image.tar"
        subprocess.run(["podman", "save", "--quiet", "--format", "oci-archive", "-o", str(archive),
                        AGENTBOX_IMAGE], check=True)  # fmt: skip
        archive.chmod(0o644)
        loaded = as_user(user, "podman", "load", "--quiet", "-i", str(archive))
        assert loaded.returncode == 0, loaded.stderr
    tagged = as_user(user, "podman", "tag", _loaded_name(loaded.stdout), AGENTBOX_IMAGE)
    assert tagged.returncode == 0, tagged.stderr
    return user


def _loaded_name(out: str) -> str:
    # "Loaded image: localhost/agentbox:latest" or "Loaded image(s): sha256:..."
    return out.strip().split()[-1]
