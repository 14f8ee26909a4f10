"""The monorepo's own rules: package layout, version floors, and nox agreeing with pyproject."""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if p.is_dir())
SCRIPTS = {
    "agentbox-cli": ["agentbox"],
    "loftd": ["loftd"],
    "agentbox-guest-init": ["agentbox-guest-init", "loftd-guest-init"],
}


def pyproject(pkg: str) -> dict[str, object]:
    return tomllib.loads((ROOT / "packages" / pkg / "pyproject.toml").read_text())


@functools.cache
def nox_local_deps() -> dict[str, list[str]]:
    """noxfile.py's LOCAL_DEPS, which it derives from the pyprojects (the repo session installs
    nox, which the noxfile imports)."""
    spec = importlib.util.spec_from_file_location("noxfile", ROOT / "noxfile.py")
    assert spec is not None
    assert spec.loader is not None
    noxfile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(noxfile)
    value = noxfile.LOCAL_DEPS
    assert isinstance(value, dict)
    return value


def version_of(pkg: str) -> str:
    """The one version source: ``__version__`` in the package's ``__init__`` (hatch reads it)."""
    init = ROOT / "packages" / pkg / "src" / pkg.replace("-", "_") / "__init__.py"
    found = re.findall(r'^__version__ = "([^"]*)"$', init.read_text(), flags=re.M)
    assert len(found) == 1, f"{init}: one __version__ line"
    return str(found[0])


def test_the_seven_packages() -> None:
    assert sorted([
        "agentbox-state", "agentbox-storage", "agentbox-podman", "agentbox-krun",
        "agentbox-cli", "agentbox-guest-init", "loftd",
    ]) == PACKAGES  # fmt: skip


@pytest.mark.parametrize("pkg", PACKAGES)
def test_package_shape(pkg: str) -> None:
    data = pyproject(pkg)
    project = data["project"]
    assert isinstance(project, dict)
    assert project["name"] == pkg
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    hatch_version = data["tool"]["hatch"]["version"]  # type: ignore[index]
    assert hatch_version == {"path": f"src/{pkg.replace('-', '_')}/__init__.py"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", version_of(pkg))
    assert project["requires-python"] == ">=3.11"
    module = pkg.replace("-", "_")
    src = ROOT / "packages" / pkg / "src" / module
    assert (src / "py.typed").exists()
    assert any((ROOT / "packages" / pkg / "tests").glob("test_*.py"))
    scripts = project.get("scripts", {})
    assert list(scripts) == SCRIPTS.get(pkg, [])


@pytest.mark.parametrize("pkg", PACKAGES)
def test_siblings_are_floors_and_match_nox(pkg: str) -> None:
    project = pyproject(pkg)["project"]
    assert isinstance(project, dict)
    deps: list[str] = project["dependencies"]
    siblings = []
    for dep in deps:
        name = re.split(r"[<>=!~; \[]", dep, maxsplit=1)[0]
        assert "==" not in dep, f"{pkg}: pin {dep!r} as a floor (>=), never =="
        if name in PACKAGES:
            assert ">=" in dep, f"{pkg}: sibling {dep!r} needs a version floor"
            siblings.append(name)
        elif name == "tomli":
            assert "python_version < '3.11'" in dep, "tomli only where tomllib is missing"
    local = nox_local_deps()
    assert sorted(siblings) == sorted(local[pkg])
    assert all(list(local).index(s) < list(local).index(pkg) for s in siblings), "bottom-up"
    if pkg == "agentbox-guest-init":
        assert deps == [], "the guest init depends on nothing"


# Where a distribution's import name is not its name with dashes as underscores.
IMPORT_NAMES = {"PyYAML": "yaml"}


def imported_modules(src: Path) -> set[str]:
    """The top-level modules any source file under ``src`` imports (at any depth, also under
    TYPE_CHECKING: a typed package's annotations need their library installed too)."""
    found: set[str] = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_declared_dependency_is_imported(pkg: str) -> None:
    """A third-party dependency no source imports is dead weight (or, like the tomli that was
    declared only for Python < 3.11 under requires-python >= 3.11, one that can never install)."""
    project = pyproject(pkg)["project"]
    assert isinstance(project, dict)
    imported = imported_modules(ROOT / "packages" / pkg / "src")
    unused = []
    for dep in project["dependencies"]:
        name = re.split(r"[<>=!~ \[]", dep, maxsplit=1)[0]
        assert ";" not in dep, f"{pkg}: {dep!r}: no environment markers under requires-python"
        if name in PACKAGES:
            continue
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        if module not in imported:
            unused.append(f"{dep} ({module})")
    assert unused == [], f"{pkg} declares dependencies none of its sources import"


# What only an app may name: its disks (file names, labels, ids) and its guest contract's
# variables. The libraries take them as data from the app (agentbox_cli.libkrun.disks,
# agentbox_cli.microvm.face, loftd.face).
APP_NAMES = re.compile(r"LIBKRUN_NIX|LIBKRUN_CONTAINERS|MICROVM_|LOFTD_")


@pytest.mark.parametrize("pkg", ["agentbox-storage", "agentbox-krun"])
def test_libraries_name_no_app(pkg: str) -> None:
    src = ROOT / "packages" / pkg / "src"
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for path in sorted(src.rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if APP_NAMES.search(line)]  # fmt: skip
    assert found == []


def test_the_test_harness_is_never_published() -> None:
    harness = tomllib.loads((ROOT / "tests" / "support" / "pyproject.toml").read_text())
    project = harness["project"]
    assert project["name"] == "agentbox-testing"
    assert "Private :: Do Not Upload" in project["classifiers"]
    # nothing of ours (it serves every package); jsonschema checks the --json outputs' schemas
    assert project["dependencies"] == ["pytest>=8", "jsonschema>=4.18"]
    for pkg in PACKAGES:
        deps = pyproject(pkg)["project"]["dependencies"]  # type: ignore[index]
        assert not [d for d in deps if d.startswith("agentbox-testing")], pkg
    testing = (ROOT / "packages/agentbox-state/src/agentbox_state/testing.py").read_text()
    assert "def require" not in testing  # the published runner doubles carry no CI harness
