import subprocess
import sys
from pathlib import Path

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


REPORTING = """
import os, sys
from agentbox_guest_init import report
from agentbox_guest_init.runtime import supervise
path = sys.argv[1]
report.write(path, report.STARTED, "t")
seen = open(path).read()
status = supervise(lambda: os.execvp(sys.argv[2], sys.argv[2:]))
report.write(path, report.exited(status), "t")
print(seen.strip())
sys.exit(status)
"""


def test_the_report_says_started_then_how_the_command_ended(tmp_path: Path) -> None:
    path = tmp_path / "task-root" / ".agentbox-task" / "guest.status"  # parents are made
    done = subprocess.run([sys.executable, "-c", REPORTING, str(path), "sh", "-c", "exit 7"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert (done.returncode, done.stdout) == (7, "started\n")
    assert path.read_text() == "exited 7\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["guest.status"]  # no temp left


def test_a_failing_guest_init_reports_failed(tmp_path: Path) -> None:
    path = tmp_path / "guest.status"
    env = {"PATH": "/usr/bin:/bin", "AGENTBOX_GUEST_STATUS_FILE": str(path),
           "AGENTBOX_HOST_UID": "x"}  # malformed: exit 3  # fmt: skip
    code = "import sys; from agentbox_guest_init.main import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "microvm", "enter", "--", "true"],
                          env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 3
    assert done.stderr == "agentbox-guest-init: AGENTBOX_HOST_UID='x' is not a numeric id\n"
    assert path.read_text() == "failed 3\n"
    loftd = "import sys; from agentbox_guest_init.main import loftd_main; sys.exit(loftd_main())"
    path.unlink()
    done = subprocess.run([sys.executable, "-c", loftd, "enter", "--", "true"],
                          env={"PATH": "/usr/bin:/bin", "LOFTD_GUEST_STATUS_FILE": str(path),
                               "LOFTD_ENTER_AS_ROOT": "maybe"},
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 3
    assert path.read_text() == "failed 3\n"


def test_an_unwritable_report_is_said_and_not_fatal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentbox_guest_init import report

    blocker = tmp_path / "file"
    blocker.write_text("")
    assert report.write(str(blocker / "guest.status"), report.STARTED, "t") is False
    assert capsys.readouterr().err.startswith(
        f"t: cannot write the status file {blocker}/guest.status for the host: "
    )


def test_the_status_file_must_be_absolute() -> None:
    from agentbox_guest_init.contract import ContractError, parse

    assert parse({"LOFTD_GUEST_STATUS_FILE": "/s"}, prefix="LOFTD_").status_file == "/s"
    assert parse({}).status_file == ""
    with pytest.raises(ContractError, match="AGENTBOX_GUEST_STATUS_FILE='s' is not an absolute"):
        parse({"AGENTBOX_GUEST_STATUS_FILE": "s"})
