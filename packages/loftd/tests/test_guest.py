"""The guest's report and what a run's exit status means with it (pure)."""

from pathlib import Path

import pytest

from loftd import guest
from loftd.guest import Report, VmStoppedError


@pytest.mark.parametrize(
    ("text", "report"),
    [
        (None, Report("missing")),
        ("started\n", Report("started")),
        ("exited 0\n", Report("exited", 0)),
        ("exited 137\n", Report("exited", 137)),
        ("failed 4\n", Report("failed", 4)),
        ("exited\n", Report("unreadable", text="exited")),
        ("exited -1\n", Report("unreadable", text="exited -1")),
        ("started 3\n", Report("unreadable", text="started 3")),
        ("", Report("unreadable", text="")),
        ("exited ٣\n", Report("unreadable", text="exited ٣")),  # a digit, but not ASCII
    ],
)  # fmt: skip
def test_parse(text: str | None, report: Report) -> None:
    assert guest.parse(text) == report


def test_read_from_the_task_root(tmp_path: Path) -> None:
    assert guest.read(tmp_path) == Report("missing")
    path = guest.status_file(tmp_path)
    assert path == tmp_path / ".agentbox-task" / "guest.status"
    path.parent.mkdir()
    path.write_text("exited 7\n")
    assert guest.read(tmp_path) == Report("exited", 7)


def test_a_guest_that_reported_is_honoured() -> None:
    assert guest.verdict("m", Report("exited", 7), 7, preserve=False) == 7
    assert guest.verdict("m", Report("exited", 0), 0, preserve=False) == 0
    # libkrun's own status does not override what the guest said
    assert guest.verdict("m", Report("exited", 3), 1, preserve=False) == 3


@pytest.mark.parametrize(
    ("report", "code", "message", "exit_code"),
    [
        (Report("missing"), 1, "m: the VM stopped before the guest started (exit 1 from libkrun)",
         1),
        (Report("missing"), 137, "m: the VM stopped before the guest started (libkrun's process "
         "was killed by SIGKILL)", 137),
        (Report("started"), 1, "m: the VM stopped while the command was running (exit 1 from "
         "libkrun); the command's own status is unknown", 1),
        (Report("failed", 4), 4, "m: the guest init failed before the command ran (exit 4)", 4),
        (Report("unreadable", text="junk"), 0, "m: the guest's report (.agentbox-task/"
         "guest.status in the task root) is unreadable: 'junk' (exit 0 from libkrun)", 1),
    ],
)  # fmt: skip
def test_without_a_status_the_vm_failed(
    report: Report, code: int, message: str, exit_code: int
) -> None:
    with pytest.raises(VmStoppedError) as caught:
        guest.verdict("m", report, code, preserve=False)
    assert caught.value.message == message
    assert caught.value.exit_code == exit_code
    assert caught.value.hint is not None
    assert caught.value.hint.endswith("--preserve-debug keeps the task root for a look")
    with pytest.raises(VmStoppedError) as kept:
        guest.verdict("m", report, code, preserve=True)
    assert kept.value.hint is not None
    assert "--preserve-debug" not in kept.value.hint
