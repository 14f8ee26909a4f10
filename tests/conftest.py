"""Shared fixtures for the top-level tests: the installed commands and an isolated home."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentbox_testing import require, require_test_user

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
        self.extra_env: dict[str, str] = {}  # set by a test module for all of its runs

    @property
    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                **self.extra_env}  # fmt: skip

    def config(self, app: str, text: str) -> Path:
        path = self.home / ".config" / app / f"{app}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def run(
        self,
        *argv: str | Path,
        cwd: Path | None = None,
        extra: dict[str, str] | None = None,
        **env: str,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [os.fspath(a) for a in argv],
            cwd=cwd or self.project,
            env={**self.env, **(extra or {}), **env},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


@pytest.fixture
def home_at() -> Callable[[Path], Home]:
    """``home_at(dir)``: a ``Home`` rooted somewhere else (a btrfs mount, say)."""
    return Home


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


PACKAGES = ["agentbox_cli", "agentbox_state", "agentbox_storage", "agentbox_podman",
            "agentbox_krun", "loftd", "agentbox_guest_init"]  # fmt: skip
# the third-party packages a run imports that the host's python3 may lack (uvloop: the egress
# proxy's loop; a manylinux wheel for the same CPython, so its copy loads there too)
RUNTIME_DEPS = ["uvloop"]


class UserBox:
    """Runs agentbox or loftd as the ordinary test user, from world-readable package copies, in
    a project dir the user owns."""

    def __init__(self, user: str, code_dir: Path, project: Path, **env: str) -> None:
        import pwd

        from agentbox_state.workspace import Workspace

        self.user = user
        self.pw = pwd.getpwnam(user)
        self.code_dir = code_dir
        self.project = project
        self.extra = env
        self.key = Workspace.from_path(project).key
        state = env.get("XDG_STATE_HOME", f"{self.pw.pw_dir}/.local/state")
        self.state_dir = Path(state) / "agentbox/workspaces" / self.key
        self.loftd_state_dir = Path(state) / "loftd/workspaces" / self.key

    def env(self, **extra: str) -> list[str]:
        base = {"HOME": self.pw.pw_dir, "USER": self.user, "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(self.code_dir), **self.extra, **extra}  # fmt: skip
        return ["env", "-i", *(f"{k}={v}" for k, v in base.items())]

    def argv(self, *args: str, module: str = "agentbox_cli", **env: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *self.env(**env), "python3", "-m", module,
                *args]  # fmt: skip

    def run(self, *args: str, module: str = "agentbox_cli", **env: str
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(
            self.argv(*args, module=module, **env), cwd=self.project, capture_output=True,
            text=True, check=False, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def podman(self, *args: str) -> str:
        argv = ["runuser", "-u", self.user, "--", *self.env(), "podman", *args]
        done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd="/tmp")
        return done.stdout

    def leftovers(self) -> dict[str, list[str] | int]:
        """This workspace's containers and overlay mounts (in podman's namespace)."""
        mounts = subprocess.run(
            ["runuser", "-u", self.user, "--", *self.env(), "podman", "unshare", "sh", "-c",
             f"grep -c '{self.key}/nix/merged' /proc/self/mountinfo || true"],
            capture_output=True, text=True, check=True, cwd="/tmp",
        ).stdout.strip()  # fmt: skip
        mine = self.podman("ps", "--all", "--filter", f"label=agentbox.workspace={self.key}",
                           "--format", "{{.Names}}").split()  # fmt: skip
        return {"containers": sorted(mine), "fuse_mounts": int(mounts or 0)}


@pytest.fixture(scope="session")
def user_code() -> Iterator[Path]:
    """Copies of our packages (and ``RUNTIME_DEPS``) the test user can import (the venv may
    not be readable)."""
    import importlib

    require_test_user()
    with tempfile.TemporaryDirectory(prefix="agentbox-user-code-") as tmp:
        code = Path(tmp)
        for name in (*PACKAGES, *RUNTIME_DEPS):
            module = importlib.import_module(name)
            assert module.__file__ is not None
            shutil.copytree(Path(module.__file__).parent, code / name,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        subprocess.run(["chmod", "-R", "a+rX", str(code)], check=True)
        yield code


@pytest.fixture
def user_box(user_code: Path, test_user: str) -> Iterator[Callable[..., UserBox]]:
    """``user_box(**env)``: a fresh project owned by the test user, run there as that user."""
    import pwd

    pw = pwd.getpwnam(test_user)
    with tempfile.TemporaryDirectory(prefix="agentbox-user-") as tmp:
        os.chmod(tmp, 0o755)

        def make(**env: str) -> UserBox:
            project = Path(tmp) / "work" / "my-project"
            project.mkdir(parents=True)
            for d in (project.parent, project):
                os.chown(d, pw.pw_uid, pw.pw_gid)
            return UserBox(test_user, user_code, project, **env)

        yield make


@pytest.fixture(scope="session")
def user_image(bin_dir: Path) -> str:
    """Build the image as root (cached stages), then load it into the test user's storage."""
    user = require_test_user()
    require(shutil.which("podman") is not None, "podman is missing (apt-get install podman)")
    built = subprocess.run([str(bin_dir / "agentbox"), "image", "build"], capture_output=True,
                           text=True, check=False, timeout=3600)  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert built.stdout == f"{AGENTBOX_IMAGE}\n"
    ident = ["podman", "image", "inspect", "--format", "{{.Id}}", AGENTBOX_IMAGE]
    mine = subprocess.run(ident, capture_output=True, text=True, check=True).stdout
    if as_user(user, *ident).stdout == mine:
        return user  # loaded already (a load of the 3.5 GB workstation takes minutes)
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
    as_user(user, "podman", "image", "prune", "--force")  # earlier loads' untagged copies
    return user


def _loaded_name(out: str) -> str:
    # "Loaded image: localhost/agentbox:latest" or "Loaded image(s): sha256:..."
    return out.strip().split()[-1]
