"""The stub libkrun (``packages/agentbox-krun/tests/stub/libkrun_stub.c``) as the tests build
it: a shared object whose ``krun_start_enter`` runs a shell script instead of a VM, so a whole
``agentbox microvm`` or ``loftd`` run is exercised on a host that cannot boot one."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from agentbox_testing import require


def compile_stub(source: Path, where: Path, on_enter: Path, *, status: int = 0,
                 fail: str | None = None) -> Path:  # fmt: skip
    """``where/libkrun_stub.so``: its "VM" runs ``on_enter`` (``$1``: the root) and exits
    ``status``; its calls are logged to ``where/calls.log``; ``fail`` names a call that fails.
    Settings are compiled in (the helper gets a minimal environment)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    require(cc is not None, "a C compiler is missing (apt-get install gcc)")
    assert cc is not None
    lib = where / "libkrun_stub.so"
    failing = [f'-DSTUB_FAIL="{fail}"'] if fail else []
    subprocess.run([cc, "-shared", "-fPIC", f'-DSTUB_LOG="{where / "calls.log"}"',
                    f'-DSTUB_EXIT="{status}"', f'-DSTUB_ON_ENTER="{on_enter}"', *failing,
                    "-o", str(lib), str(source)], check=True)  # fmt: skip
    return lib


def lingering_stub(source: Path, where: Path, extra: str = "") -> tuple[Path, Path]:
    """A stub whose "VM" stays up 60 s (``extra`` shell lines after that); (library, the
    file it touches once it is up)."""
    where.mkdir(parents=True, exist_ok=True)
    script, up = where / "on-enter", where / "vm-up"
    script.write_text(f"#!/bin/sh\ntouch {up}\n{extra or 'sleep 60'}\n")
    script.chmod(0o755)
    return compile_stub(source, where, script), up


def start_lingering(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], up: Path,
                    stderr: int | None = subprocess.PIPE) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start a run (its own session, so the tests can kill its process group) and return once
    its stub VM is up."""
    run = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=stderr,
                           start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not up.exists():
        assert time.monotonic() < deadline, "the helper never reached krun_start_enter"
        assert run.poll() is None, run.communicate()
        time.sleep(0.05)
    return run


def helper_pid(run: subprocess.Popen[bytes]) -> int:
    """The pid of the VM helper (``python -m agentbox_krun.enter``) the run started."""
    children = Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()
    (pid,) = (int(p) for p in children
              if b"agentbox_krun.enter" in Path(f"/proc/{p}/cmdline").read_bytes())  # fmt: skip
    return pid
