"""The stub libkrun, compiled from C once per session, and a way to run the helper on it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from agentbox_krun import launchconf
from agentbox_krun.launchconf import LaunchConf
from agentbox_testing import require

STUB_SOURCE = Path(__file__).parent / "stub" / "libkrun_stub.c"


def _compile(where: Path, *defines: str) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    require(cc is not None, "a C compiler is missing (apt-get install gcc)")
    assert cc is not None
    out = where / "libkrun_stub.so"
    subprocess.run([cc, "-shared", "-fPIC", "-Wall", "-Werror", *defines, "-o", str(out),
                    str(STUB_SOURCE)], check=True)  # fmt: skip
    return out


@pytest.fixture(scope="session")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _compile(tmp_path_factory.mktemp("stub"))


@pytest.fixture(scope="session")
def minimal_stub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the required functions (and krun_add_virtiofs), like PyPI's fork and older builds."""
    return _compile(tmp_path_factory.mktemp("minimal-stub"), "-DSTUB_MINIMAL")


class Launched(NamedTuple):
    """What a helper run left: its exit status, the stub's call log, its stdout and stderr."""

    code: int
    calls: list[str]
    out: str
    err: str


@pytest.fixture
def launch(tmp_path: Path) -> Callable[..., Launched]:
    """``launch(lib, conf, *, env_var=..., on_enter=None, **env)``: write ``conf`` and run the
    helper process on it with ``lib`` as libkrun; ``on_enter`` is a shell script body the stub
    runs (with the root as $1) when the VM would start; ``env`` sets the stub's KRUN_STUB_*."""

    def run(lib: Path, conf: LaunchConf, *, env_var: str = "AGENTBOX_LIBKRUN_LIBRARY",
            on_enter: str | None = None, **env: str) -> Launched:  # fmt: skip
        path = tmp_path / "launch.conf"
        launchconf.write(conf, path)
        log = tmp_path / "calls.log"
        log.unlink(missing_ok=True)
        if on_enter is not None:
            script = tmp_path / "on-enter"
            script.write_text("#!/bin/sh\n" + on_enter)
            script.chmod(0o755)
            env = {"KRUN_STUB_ON_ENTER": str(script), **env}
        done = subprocess.run(
            [sys.executable, "-m", "agentbox_krun.helper", env_var, str(path)],
            env={"PATH": "/usr/bin:/bin", env_var: str(lib), "KRUN_STUB_LOG": str(log), **env},
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        calls = log.read_text().splitlines() if log.exists() else []
        return Launched(done.returncode, calls, done.stdout, done.stderr)

    return run
