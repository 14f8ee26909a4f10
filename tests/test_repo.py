"""The monorepo's own rules: package layout, version floors, and nox agreeing with pyproject."""

from __future__ import annotations

import ast
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


def nox_local_deps() -> dict[str, list[str]]:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "LOCAL_DEPS":
            assert node.value is not None
            value = ast.literal_eval(node.value)
            assert isinstance(value, dict)
            return value
    raise AssertionError("noxfile.py has no LOCAL_DEPS")


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
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["requires-python"] == ">=3.11"
    module = pkg.replace("-", "_")
    src = ROOT / "packages" / pkg / "src" / module
    assert (src / "py.typed").exists()
    assert f'__version__ = "{project["version"]}"' in (src / "__init__.py").read_text()
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
    assert sorted(siblings) == sorted(nox_local_deps()[pkg])
    if pkg == "agentbox-guest-init":
        assert deps == [], "the guest init depends on nothing"


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
