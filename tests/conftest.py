"""Shared fixtures for the top-level tests: the installed commands and an isolated home."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agentbox_state.testing import require

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
