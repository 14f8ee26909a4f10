"""The stub libkrun, compiled from C once per session for this package's tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agentbox_state.testing import require

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
