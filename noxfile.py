"""Every check agentbox has, one session each.

    nox                 # lint, types, imports, a unit session per package, integration
    nox -s bench        # start-up ratios against the raw tools (not a test: prints numbers)

Each unit session installs only its package and the siblings it declares, from this checkout,
into a venv of its own: a missing dependency declaration fails there.
"""

# /// script
# dependencies = ["nox>=2024.10.9", "uv>=0.5"]
# ///

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.needs_version = ">=2024.10.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
# Each package and the local siblings it depends on, bottom-up (mirrors their pyproject.toml;
# test_declared_siblings in tests/ checks that the two agree).
LOCAL_DEPS: dict[str, list[str]] = {
    "agentbox-state": [],
    "agentbox-guest-init": [],
    "agentbox-storage": ["agentbox-state"],
    "agentbox-podman": ["agentbox-state"],
    "agentbox-krun": ["agentbox-state"],
    "loftd": ["agentbox-state", "agentbox-storage", "agentbox-podman", "agentbox-krun"],
    "agentbox-cli": [
        "agentbox-state", "agentbox-storage", "agentbox-podman", "agentbox-krun", "loftd",
        "agentbox-guest-init",
    ],
}  # fmt: skip
PACKAGES = list(LOCAL_DEPS)

RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"
IMPORT_LINTER = "import-linter==2.17"
PYTEST = "pytest>=8"
PYINSTALLER = "pyinstaller==6.*"


def local(*packages: str) -> list[str]:
    return [os.fspath(ROOT / "packages" / p) for p in packages]


def test_group(pkg: str) -> list[str]:
    """The package's own test dependencies (``[dependency-groups] test``)."""
    import tomllib

    data = tomllib.loads((ROOT / "packages" / pkg / "pyproject.toml").read_text())
    return list(data.get("dependency-groups", {}).get("test", [PYTEST]))


def install_all(session: nox.Session, *extra: str) -> None:
    session.install(*local(*PACKAGES), *extra)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install(RUFF)
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    """mypy --strict over every package, its tests, the top-level tests and this file.

    Test dirs are checked one by one: each may have its own ``conftest`` module."""
    session.install(MYPY, PYTEST, "nox", "podman>=4.3", "dataclasses-json>=0.6",
                    "typing-extensions>=4.6")  # fmt: skip
    session.run("mypy", *(f"packages/{p}/src" for p in PACKAGES), "bench", "noxfile.py",
                *session.posargs)  # fmt: skip
    for tests in [*(f"packages/{p}/tests" for p in PACKAGES), "tests"]:
        session.run("mypy", tests, *session.posargs, env={"MYPYPATH": tests})


@nox.session
def imports(session: nox.Session) -> None:
    """import-linter: layers import only downward; the guest init imports nothing of ours."""
    install_all(session, IMPORT_LINTER)
    session.run("lint-imports", *session.posargs)


@nox.session
@nox.parametrize("pkg", PACKAGES, ids=PACKAGES)
def unit(session: nox.Session, pkg: str) -> None:
    """One package's unit tests, with only that package and its declared siblings installed."""
    session.install(*local(*LOCAL_DEPS[pkg], pkg), *test_group(pkg))
    session.run("pytest", f"packages/{pkg}/tests", *session.posargs)


@nox.session
def integration(session: nox.Session) -> None:
    """Cross-package and real-tool tests (top-level tests/) against the installed commands."""
    # smolmachines: a real libkrun and libkrunfw for the whole-command-line microvm test
    install_all(session, PYTEST, "nox", "smolmachines")
    session.run("pytest", *(session.posargs or ["tests"]))


@nox.session
def freeze(session: nox.Session) -> None:
    """Freeze agentbox-guest-init (and loftd-guest-init, the same bundle) with PyInstaller into
    build/guest-init/, then smoke-test and time it."""
    session.install(*local("agentbox-guest-init"), PYINSTALLER)
    out = ROOT / "build" / "guest-init"
    session.run(
        "pyinstaller", "--noconfirm", "--clean", "--onedir", "--name", "agentbox-guest-init",
        "--distpath", os.fspath(out), "--workpath", os.fspath(ROOT / "build" / "pyinstaller"),
        "--specpath", os.fspath(ROOT / "build"),
        # PyInstaller's runtime hooks for inspect and ctypes import inspect, zipfile and ctypes
        # on every start (~45 ms here); the guest init uses neither.
        "--exclude-module", "inspect", "--exclude-module", "ctypes",
        "freeze/guest_init_entry.py",
    )  # fmt: skip
    session.run(
        "python", "freeze/smoke.py", os.fspath(out / "agentbox-guest-init" / "agentbox-guest-init")
    )


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Ratios against the raw tools (prints, never fails): command-line start-up against
    `python -c pass`; btrfs-snapshot task roots against bare snapshots and `cp -a`; container
    mode against bare `podman run`; the direct-libkrun host pipeline against snapshot + delete."""
    # Compile bytecode at install time, as pip does for users (uv does not by default).
    session.env["UV_COMPILE_BYTECODE"] = "1"
    install_all(session)
    session.run("python", "bench/startup.py", *session.posargs)
    session.run("python", "bench/storage.py", *session.posargs)
    session.run("python", "bench/container.py", *session.posargs)
    session.run("python", "bench/microvm.py", *session.posargs)
    session.run("python", "bench/image.py", *session.posargs)
