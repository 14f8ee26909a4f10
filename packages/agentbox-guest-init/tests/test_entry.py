import subprocess
import sys

import pytest

from agentbox_guest_init import __version__
from agentbox_guest_init.main import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"agentbox-guest-init {__version__}\n"


@pytest.mark.parametrize("argv", [[], ["bogus"], ["container", "explode"], ["--version", "x"]])
def test_unknown_commands_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("agentbox-guest-init: unknown command: ")


def test_imports_only_the_standard_library() -> None:
    # Run in a fresh interpreter so pytest's own imports do not count.
    code = (
        "import sys; before = set(sys.modules)\n"
        "import agentbox_guest_init.main\n"
        "extra = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(extra - set(sys.stdlib_module_names) - {'agentbox_guest_init'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"


SUPERVISOR = """
import os, sys
from agentbox_guest_init.runtime import supervise
sys.exit(supervise(lambda: os.execvp(sys.argv[1], sys.argv[1:])))
"""


def test_supervisor_forwards_signals_and_returns_the_status() -> None:
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, "sleep", "30"])
    time.sleep(0.5)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    assert time.monotonic() - start < 5
    done = subprocess.run([sys.executable, "-c", SUPERVISOR, "sh", "-c", "exit 7"], check=False)
    assert done.returncode == 7
