"""The probe's readings of tool answers, through a recording runner (no real tool runs)."""

from agentbox_cli.doctor import probe
from agentbox_cli.libkrun.handler import DOCTOR_HINT, HINT
from agentbox_state.testing import RecordingRunner

INSPECT = ("podman", "image", "inspect")


def test_a_version_line_is_the_one_naming_the_tool() -> None:
    runner = RecordingRunner()
    runner.script(
        "fuse-overlayfs",
        stdout="fusermount3 version: 3.14.0\n",
        stderr="fuse-overlayfs: version 1.10\nFUSE library version 3.14.0\n",
    )
    runner.script("newuidmap", returncode=1, stderr="usage: newuidmap <pid> <uid> ...\n")
    assert (
        probe.tool_line(runner, ("fuse-overlayfs", "--version")) == "fuse-overlayfs: version 1.10"
    )
    assert probe.tool_line(runner, ("newuidmap",)) == "usage: newuidmap <pid> <uid> ..."
    assert runner.argvs == [["fuse-overlayfs", "--version"], ["newuidmap"]]


def test_podman_info_gives_the_runtime_and_the_driver_or_what_went_wrong() -> None:
    runner = RecordingRunner()
    runner.script("podman", "info", stdout="crun\toverlay\n")
    assert probe.podman_info(runner) == (("crun", "overlay"), None)
    failing = RecordingRunner()
    failing.script(
        "podman",
        "info",
        returncode=125,
        stderr="time=x level=warning msg=y\nError: cannot re-exec process\n",
    )
    assert probe.podman_info(failing) == (None, "Error: cannot re-exec process")


def test_the_image_its_label_and_its_age() -> None:
    runner = RecordingRunner()
    runner.script(*INSPECT, stdout="0.1.0\t1796168841\n")
    assert probe.image("localhost/agentbox:latest", runner) == probe.Image(
        ref="localhost/agentbox:latest", present=True, guest_init="0.1.0", created=1796168841.0
    )
    assert runner.argvs == [["podman", "image", "inspect", "--format",
                             '{{index .Labels "agentbox.guest-init.version"}}\t{{.Created.Unix}}',
                             "localhost/agentbox:latest"]]  # fmt: skip
    unlabelled = RecordingRunner()
    unlabelled.script(*INSPECT, stdout="<no value>\t1796168841\n")
    assert probe.image("x", unlabelled).guest_init is None
    absent = RecordingRunner()
    absent.script(*INSPECT, returncode=125, stderr="Error: x: image not known\n")
    assert probe.image("x", absent) == probe.Image(ref="x", present=False, guest_init=None,
                                                   created=None)  # fmt: skip
    broken = RecordingRunner()
    broken.script(*INSPECT, returncode=125, stderr="Error: database is locked\n")
    assert probe.image("x", broken).error == "Error: database is locked"


def test_libkrun_modes_refusal_points_to_doctor_and_the_config_lines() -> None:
    assert HINT.endswith("; " + DOCTOR_HINT)
    assert DOCTOR_HINT == (
        "`agentbox doctor` says which mode this host can run; to make container mode the "
        'default, put `[run]` / `mode = "container"` in agentbox.toml (or set '
        "AGENTBOX_MODE=container)"
    )


def test_the_krun_handler_is_read_from_cruns_whole_version_answer() -> None:
    runner = RecordingRunner()
    runner.script("crun", "--version", stdout="crun version 1.19\ncommit: abc\nspec: 1.0.0\n"
                  "+SYSTEMD +SELINUX +CAP +SECCOMP +EBPF +LIBKRUN +YAJL\n")  # fmt: skip
    assert probe.krun_handler(runner) == ("crun version 1.19", None)
    without = RecordingRunner()
    without.script("crun", "--version", stdout="crun version 1.8\n+SYSTEMD +SELINUX\n")
    assert probe.krun_handler(without) == (None, "crun version 1.8 is built without libkrun")
