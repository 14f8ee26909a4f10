"""The built sdists and wheels (``nox -s build`` makes them, then runs this file): their metadata,
and installing them the ways users and other tools do, from a local wheelhouse only.

``AGENTBOX_DIST`` is the dir of our dists; ``AGENTBOX_WHEELHOUSE`` holds our wheels and those of
their third-party dependencies, so no index is asked and no same-named project elsewhere can be
installed instead of ours."""

from __future__ import annotations

import email.message
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from agentbox_testing import btrfs_loop, require, require_root

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if p.is_dir())
SCRIPTS = {"agentbox-cli": "agentbox", "loftd": "loftd"}


def dist_dir(var: str) -> Path:
    where = os.environ.get(var)
    require(where is not None, f"{var} is unset: run this file through `nox -s build`")
    assert where is not None
    return Path(where)


def dependencies(pkg: str) -> list[str]:
    text = (ROOT / "packages" / pkg / "pyproject.toml").read_text()
    return list(tomllib.loads(text)["project"].get("dependencies", []))


def version_of(pkg: str) -> str:
    init = ROOT / "packages" / pkg / "src" / pkg.replace("-", "_") / "__init__.py"
    return str(re.findall(r'^__version__ = "([^"]*)"$', init.read_text(), flags=re.M)[0])


def wheel(pkg: str) -> Path:
    return dist_dir("AGENTBOX_DIST") / f"{pkg.replace('-', '_')}-{version_of(pkg)}-py3-none-any.whl"


def metadata(text: str) -> email.message.Message:
    return email.parser.Parser().parsestr(text)


def normalized(requirements: list[str]) -> list[str]:
    """Requirements compared as PEP 508 means them: names canonical (PEP 503; a backend may
    write ``PyYAML`` as ``pyyaml``), then specifiers and markers as written."""

    def one(req: Requirement) -> str:
        marker = f"; {req.marker}" if req.marker else ""
        return f"{canonicalize_name(req.name)}{req.specifier}{marker}"

    return sorted(one(Requirement(r)) for r in requirements)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_wheel_and_sdist_metadata(pkg: str) -> None:
    module, version = pkg.replace("-", "_"), version_of(pkg)
    with zipfile.ZipFile(wheel(pkg)) as z:
        names = z.namelist()
        meta = metadata(z.read(f"{module}-{version}.dist-info/METADATA").decode())
    assert (meta["Name"], meta["Version"], meta["Requires-Python"]) == (pkg, version, ">=3.11")
    assert normalized(meta.get_all("Requires-Dist") or []) == normalized(dependencies(pkg))
    assert f"{module}/py.typed" in names
    assert {n.split("/")[0] for n in names} == {module, f"{module}-{version}.dist-info"}
    with tarfile.open(dist_dir("AGENTBOX_DIST") / f"{module}-{version}.tar.gz") as sdist:
        info = sdist.extractfile(f"{module}-{version}/PKG-INFO")
        assert info is not None
        pkg_info = metadata(info.read().decode())
    assert (pkg_info["Name"], pkg_info["Version"]) == (pkg, version)


def fresh_venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    return where / "bin" / "python"


def pip_install(python: Path, *wheels: Path) -> None:
    house = dist_dir("AGENTBOX_WHEELHOUSE")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index",
                    "--find-links", str(house), *map(str, wheels)], check=True)  # fmt: skip
    subprocess.run([str(python), "-m", "pip", "check"], check=True)


STORAGE_AS_A_TOOL = r"""
import os, sys
from pathlib import Path
from agentbox_state.runner import SubprocessRunner
from agentbox_storage import taskroot
from agentbox_storage.backends import Backend

cache, tasks = Path(sys.argv[1]), Path(sys.argv[2])
runner = SubprocessRunner(os.environ)
root = taskroot.materialize(Backend.BTRFS_SNAPSHOT, cache, tasks / "t1", runner)
(root.rootfs / "written-by-the-task").write_text("x")
seen = sorted(p.name for p in root.rootfs.iterdir())
taskroot.cleanup(root, runner)
print(seen, root.rootfs.exists(), sorted(p.name for p in cache.iterdir()))
"""


@pytest.mark.root
@pytest.mark.btrfs
def test_state_and_storage_alone_make_and_remove_a_task_root(tmp_path: Path) -> None:
    """Another tool's use of the storage layer: only the agentbox-state and agentbox-storage
    wheels in a fresh venv, a snapshot task root of a cached rootfs on btrfs, then cleaned."""
    require_root("btrfs subvolumes on a loop mount")
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, wheel("agentbox-state"), wheel("agentbox-storage"))
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format", "freeze"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    ours = sorted(line.split("==")[0] for line in listed.splitlines() if line.startswith(
        ("agentbox", "loftd")))  # fmt: skip
    assert ours == ["agentbox-state", "agentbox-storage"]
    with btrfs_loop(tmp_path / "fs.img", tmp_path / "mnt", size="1G") as mnt:
        cache = mnt / "cache"
        subprocess.run(["btrfs", "subvolume", "create", str(cache)], check=True,
                       capture_output=True)  # fmt: skip
        (cache / "etc").mkdir()
        (cache / "etc" / "os-release").write_text("ID=test\n")
        done = subprocess.run([str(python), "-c", STORAGE_AS_A_TOOL, str(cache), str(mnt / "t")],
                              capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['etc', 'written-by-the-task'] False ['etc']\n"


@pytest.mark.parametrize("pkg", ["agentbox-cli", "loftd"])
def test_pipx_install_gives_the_apps_command_alone(pkg: str) -> None:
    """``pipx install`` of an app's wheel puts that app's command on PATH and no other."""
    pipx = shutil.which("pipx", path=str(Path(sys.executable).parent))
    require(pipx is not None, "pipx is missing from the session (nox -s build installs it)")
    assert pipx is not None
    with tempfile.TemporaryDirectory(prefix="agentbox-pipx-") as tmp:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp,
               "PIPX_HOME": f"{tmp}/pipx", "PIPX_BIN_DIR": f"{tmp}/bin",
               "PIPX_MAN_DIR": f"{tmp}/man"}  # fmt: skip
        house = dist_dir("AGENTBOX_WHEELHOUSE")
        subprocess.run([pipx, "install", "--python", sys.executable,
                        f"--pip-args=--no-index --find-links={house}", str(wheel(pkg))],
                       env=env, check=True, capture_output=True)  # fmt: skip
        on_path = sorted(p.name for p in Path(tmp, "bin").iterdir())
        version = subprocess.run([f"{tmp}/bin/{SCRIPTS[pkg]}", "--version"], env=env,
                                 capture_output=True, text=True, check=False)  # fmt: skip
    assert on_path == [SCRIPTS[pkg]]
    assert (version.returncode, version.stdout) == (0, f"{SCRIPTS[pkg]} {version_of(pkg)}\n")
