"""Every check agentbox has, one session each.

    nox                 # everything below but bench, in this order
    nox -s unit         # the pure tier of every package: fast, no root, no real tools
    nox -s bench        # start-up ratios against the raw tools (not a test: prints numbers)

Tests are marked by what they need from the host (root, btrfs, podman, libkrun, kvm, image:
registered by tests/support's plugin). Unmarked tests are the pure tier, run by the unit
sessions; the marked ones run in one session per integration boundary: storage-btrfs,
podman-podman, krun-libkrun, and integration (the command lines against everything, tests/).
Each unit and boundary session installs only its package and the siblings it declares, from this
checkout, into a venv of its own: a missing dependency declaration fails there. `build` builds
and checks the sdists and wheels, and installs them the ways users and other tools would.
"""

# /// script
# dependencies = ["nox>=2024.10.9", "uv>=0.5"]
# ///

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import nox

nox.needs_version = ">=2024.10.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
HARNESS = os.fspath(ROOT / "tests" / "support")  # agentbox-testing: never published


def local_deps(root: Path = ROOT) -> dict[str, list[str]]:
    """Each package under packages/ and the siblings its pyproject.toml depends on, bottom-up
    (a package comes after every sibling it depends on)."""
    declared: dict[str, list[str]] = {}
    for path in sorted(root.glob("packages/*/pyproject.toml")):
        project = tomllib.loads(path.read_text())["project"]
        declared[project["name"]] = [_name(d) for d in project.get("dependencies", [])]
    ordered: dict[str, list[str]] = {}
    while len(ordered) < len(declared):
        ready = [p for p, deps in declared.items() if p not in ordered
                 and all(d in ordered for d in deps if d in declared)]  # fmt: skip
        if not ready:
            raise ValueError(f"packages depend on each other in a cycle: {sorted(declared)}")
        for pkg in ready:
            ordered[pkg] = [d for d in declared[pkg] if d in declared]
    return ordered


def _name(requirement: str) -> str:
    for i, char in enumerate(requirement):
        if not (char.isalnum() or char in "-_."):
            return requirement[:i].strip()
    return requirement.strip()


LOCAL_DEPS = local_deps()
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
    data = tomllib.loads((ROOT / "packages" / pkg / "pyproject.toml").read_text())
    return list(data.get("dependency-groups", {}).get("test", [PYTEST]))


def install_all(session: nox.Session, *extra: str) -> None:
    session.install(*local(*PACKAGES), *extra)


def install_package(session: nox.Session, pkg: str, *extra: str) -> None:
    """``pkg``, the siblings it declares, the test harness and the package's test group."""
    session.install(*local(*LOCAL_DEPS[pkg], pkg), HARNESS, *test_group(pkg), *extra)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install(RUFF)
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    """mypy --strict over every package, its tests, the test harness, the top-level tests and
    this file.

    Test dirs are checked one by one: each may have its own ``conftest`` module."""
    session.install(MYPY, PYTEST, "nox", "podman>=4.3", "dataclasses-json>=0.6",
                    "typing-extensions>=4.6", "jsonschema>=4.18", "uvloop>=0.21",
                    "types-jsonschema", "types-PyYAML")  # fmt: skip
    # bench/ is a dir of scripts that import each other (``testuser``) by their dir
    session.run("mypy", *(f"packages/{p}/src" for p in PACKAGES), "tests/support/src", "bench",
                "noxfile.py", *session.posargs, env={"MYPYPATH": "bench"})  # fmt: skip
    for tests in [*(f"packages/{p}/tests" for p in PACKAGES), "tests"]:
        session.run("mypy", tests, *session.posargs, env={"MYPYPATH": tests})


@nox.session
def imports(session: nox.Session) -> None:
    """import-linter: layers import only downward; the guest init imports nothing of ours."""
    install_all(session, IMPORT_LINTER)
    session.run("lint-imports", *session.posargs)


@nox.session
def repo(session: nox.Session) -> None:
    """The monorepo's own rules (tests/test_repo.py): package shapes, versions, floors."""
    session.install(*local("agentbox-state"), HARNESS, PYTEST, "nox")
    session.run("pytest", "tests/test_repo.py", *session.posargs)


@nox.session
@nox.parametrize("pkg", PACKAGES, ids=PACKAGES)
def unit(session: nox.Session, pkg: str) -> None:
    """One package's pure tier (its unmarked tests), with only that package and its declared
    siblings installed."""
    install_package(session, pkg)
    session.run("pytest", "--tier=pure", f"packages/{pkg}/tests", *session.posargs)


def boundary(session: nox.Session, pkg: str, *extra: str) -> None:
    """A package's real-tool tier (its marked tests) against the real tools, with only that
    package and its declared siblings installed."""
    install_package(session, pkg, *extra)
    session.run("pytest", "--tier=real", f"packages/{pkg}/tests", *session.posargs)


@nox.session(name="storage-btrfs")
def storage_btrfs(session: nox.Session) -> None:
    """agentbox-storage against btrfs-progs, loop-mounted btrfs and fuse-overlayfs (root)."""
    boundary(session, "agentbox-storage")


@nox.session(name="podman-podman")
def podman_podman(session: nox.Session) -> None:
    """agentbox-podman's builders and queries against real Podman and Buildah (root)."""
    boundary(session, "agentbox-podman")


@nox.session(name="krun-libkrun")
def krun_libkrun(session: nox.Session) -> None:
    """agentbox-krun against a real libkrun (PyPI's smolmachines), the helper's mount namespace
    (root) and, where KVM can boot a guest, a boot."""
    boundary(session, "agentbox-krun", "smolmachines")


@nox.session
def integration(session: nox.Session) -> None:
    """cli <-> everything: the installed commands against every package and the real tools
    (tests/, which builds the agentbox image once), then the real-tool tests of the packages
    that have no boundary of their own (agentbox-state, agentbox-guest-init, loftd,
    agentbox-cli)."""
    # smolmachines: a real libkrun and libkrunfw for the whole-command-line microvm test
    own = ["agentbox-state", "agentbox-guest-init", "loftd", "agentbox-cli"]
    # the packages' own test groups too: their test modules import them at collection
    groups = sorted({req for pkg in own for req in test_group(pkg)})
    install_all(session, HARNESS, PYTEST, "nox", "smolmachines", *groups)
    if session.posargs:
        session.run("pytest", *session.posargs)
        return
    session.run("pytest", "tests/integration")
    # exit status 5: no test of theirs needs a real tool today
    session.run("pytest", "--tier=real", *(f"packages/{p}/tests" for p in own),
                success_codes=[0, 5])  # fmt: skip


@nox.session
def build(session: nox.Session) -> None:
    """An sdist and a wheel per package (build/dist/), their metadata checked (twine check, then
    tests/packaging: name, version, requirements), then installed as users and other tools
    would: the state and storage wheels alone in a fresh venv, each app with pipx."""
    import shutil

    session.install("build[uv]", "twine", "pipx", "pip", "packaging", PYTEST, HARNESS)
    dist, house = ROOT / "build" / "dist", ROOT / "build" / "wheelhouse"
    for where in (dist, house):
        shutil.rmtree(where, ignore_errors=True)
    for pkg in PACKAGES:
        session.run("python", "-m", "build", "--installer=uv", "--sdist", "--wheel",
                    "--outdir", os.fspath(dist), os.fspath(ROOT / "packages" / pkg))  # fmt: skip
    session.run("twine", "check", "--strict", *map(os.fspath, sorted(dist.iterdir())))
    # The wheelhouse: our wheels and the third-party ones they need, so installs ask no index.
    house.mkdir(parents=True)
    for whl in dist.glob("*.whl"):
        shutil.copy2(whl, house)
    session.run("python", "-m", "pip", "download", "--quiet", "--dest", os.fspath(house),
                *third_party_requirements())  # fmt: skip
    dists = {"AGENTBOX_DIST": os.fspath(dist), "AGENTBOX_WHEELHOUSE": os.fspath(house)}
    session.run("pytest", "tests/packaging", *session.posargs, env=dists)


def third_party_requirements() -> list[str]:
    """Every requirement of our packages that is not one of them."""
    found: set[str] = set()
    for path in ROOT.glob("packages/*/pyproject.toml"):
        for dep in tomllib.loads(path.read_text())["project"].get("dependencies", []):
            if _name(dep) not in LOCAL_DEPS:
                found.add(dep)
    return sorted(found)


@nox.session(python=False)
def flake(session: nox.Session) -> None:
    """flake.nix evaluated by the host's nix against tests/support/nix-stub, a stand-in for
    nixpkgs (which cannot be fetched here): every output evaluates, each package's name,
    version and dependencies are its pyproject's, and the apps run the right scripts. Nothing
    is built, so this says nothing of nixpkgs' real builds."""
    import json
    import shutil
    import subprocess

    if shutil.which("nix") is None:
        why = "nix is missing (apt-get install nix-bin)"
        if os.environ.get("AGENTBOX_CI_ENFORCE", "0").lower() in {"1", "true", "yes", "on"}:
            session.error(why)
        session.skip(why)
    stub = f"path:{ROOT / 'tests' / 'support' / 'nix-stub'}"
    nix = ["nix", "--option", "experimental-features", "nix-command flakes",
           "--option", "build-users-group", ""]  # fmt: skip
    where = ["--no-write-lock-file", "--override-input", "nixpkgs", stub]
    session.run(*nix, "flake", "show", *where, os.fspath(ROOT), external=True)
    for system in ("x86_64-linux", "aarch64-linux"):
        packages = json.loads(evaluated(session.run(
            *nix, "eval", "--json", *where, f"{ROOT}#packages.{system}", "--apply",
            "ps: builtins.mapAttrs (n: p: [ p.pname p.version p.dependencyNames ]) ps",
            external=True, silent=True, stderr=subprocess.DEVNULL,
        )))  # fmt: skip
        apps = json.loads(evaluated(session.run(
            *nix, "eval", "--json", *where, f"{ROOT}#apps.{system}", "--apply",
            "apps: builtins.mapAttrs (n: a: a.program) apps", external=True, silent=True,
            stderr=subprocess.DEVNULL,
        )))  # fmt: skip
        want = {pkg: [pkg, package_version(pkg), flake_dependencies(pkg)] for pkg in PACKAGES}
        if {k: v for k, v in packages.items() if k != "default"} != want:
            session.error(f"flake packages differ from the pyprojects: {packages} != {want}")
        programs = {
            "agentbox": f"-agentbox-cli-{package_version('agentbox-cli')}/bin/agentbox",
            "loftd": f"-loftd-{package_version('loftd')}/bin/loftd",
        }
        programs["default"] = programs["agentbox"]
        if packages["default"] != want["agentbox-cli"] or sorted(apps) != sorted(programs) or [
            n for n, tail in programs.items() if not apps[n].endswith(tail)]:  # fmt: skip
            session.error(f"flake apps or default package are wrong: {apps}")


def evaluated(out: object) -> str:
    """What a silent ``session.run`` printed (nox gives None only when it did not run)."""
    assert isinstance(out, str), "nix eval did not run"
    return out


def package_version(pkg: str) -> str:
    """The one version source: ``__version__`` in the package's ``__init__`` (hatch's)."""
    init = ROOT / "packages" / pkg / "src" / pkg.replace("-", "_") / "__init__.py"
    for line in init.read_text().splitlines():
        if line.startswith("__version__ = "):
            return line.split('"')[1]
    raise ValueError(f"{init} has no __version__ line")


def flake_dependencies(pkg: str) -> list[str]:
    """The dependency names the flake should give ``pkg`` (none only older Pythons need), as
    nixpkgs' attributes spell them: the PyPI name in lower case (``PyYAML`` is ``pyyaml``)."""
    data = tomllib.loads((ROOT / "packages" / pkg / "pyproject.toml").read_text())
    deps = data["project"].get("dependencies", [])
    return [_name(d).lower() for d in deps if "python_version < '3.11'" not in d]


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
    `python -c pass`; btrfs-snapshot task roots against bare snapshots and `cp -a`; snapshots
    against bare reflink copies; the 4th parallel agent against the 1st; container
    mode against bare `podman run`; the direct-libkrun host pipeline against snapshot + delete;
    the egress proxy's time to first byte against a direct connection."""
    # Compile bytecode at install time, as pip does for users (uv does not by default).
    session.env["UV_COMPILE_BYTECODE"] = "1"
    install_all(session, HARNESS)
    session.run("python", "bench/startup.py", *session.posargs)
    session.run("python", "bench/storage.py", *session.posargs)
    session.run("python", "bench/snapshot.py", *session.posargs)
    session.run("python", "bench/agents.py", *session.posargs)
    session.run("python", "bench/container.py", *session.posargs)
    session.run("python", "bench/microvm.py", *session.posargs)
    session.run("python", "bench/egress.py", *session.posargs)
    session.run("python", "bench/image.py", *session.posargs)
