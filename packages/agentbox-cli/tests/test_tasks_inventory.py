"""The task inventory: Podman's records (recorded output of podman 4.3.1) and /proc/locks read
into tasks, the VM tasks of a real held lock, and what stop and kill would run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentbox_cli.tasks import inventory
from agentbox_cli.tasks.inventory import Container, Holder, LockEntry, Task, TaskError
from agentbox_state.testing import RecordingRunner

# `podman ps --format json --filter label=agentbox.role` (podman-ps(1): --format json prints
# each container's record: Id, Names, Image, Labels, Pid, StartedAt (seconds since the epoch),
# State, Mounts (destinations only), ...), trimmed of the fields the inventory does not read.
# A container task, its Nix sidecar (no task), a libkrun task, and a resize guest (no task).
PS = json.dumps([
    {"Id": "bab39298119cb7c5656ccc1770cdf05628a20408f40d04331404ebf474fea525",
     "Image": "localhost/agentbox:latest", "Names": ["app-0011223344556677"], "Pid": 3992,
     "StartedAt": 1796188186, "State": "running", "Mounts": ["/workspace", "/nix"],
     "Labels": {"agentbox.role": "task", "agentbox.workspace": "app-0123456789ab",
                "agentbox.sidecar": "agentbox-nix-app-0123456789ab",
                "agentbox.guest-init.version": "0.1.0"}},
    {"Id": "c0ffee" + "0" * 58, "Image": "localhost/agentbox:latest",
     "Names": ["agentbox-nix-app-0123456789ab"], "Pid": 3900, "StartedAt": 1796188100,
     "State": "running", "Labels": {"agentbox.role": "nix-sidecar"}},
    {"Id": "d00d" + "1" * 60, "Image": "quay.io/x/agentbox:2", "Names": ["web-8899aabbccddeeff"],
     "Pid": 4100, "StartedAt": 1796188200, "State": "running",
     "Labels": {"agentbox.role": "libkrun-task", "agentbox.workspace": "web-aaaaaaaaaaaa"}},
    {"Id": "e" * 64, "Image": "localhost/agentbox:latest", "Names": ["web-resize"], "Pid": 4200,
     "StartedAt": 1796188300, "State": "running", "Labels": {"agentbox.role": "libkrun-resize"}},
])  # fmt: skip
# `podman container inspect ID...` (podman-container-inspect(1)): Mounts with Source and
# Destination, Config.Annotations (crun's krun.disk.N.* for libkrun mode), trimmed.
INSPECT = json.dumps([
    {"Id": "bab39298119cb7c5656ccc1770cdf05628a20408f40d04331404ebf474fea525",
     "Mounts": [{"Type": "bind", "Source": "/home/u/app", "Destination": "/workspace"},
                {"Type": "bind", "Source": "/s/nix/merged", "Destination": "/nix"}],
     "Config": {"Annotations": {"io.container.manager": "libpod"}}},
    {"Id": "d00d" + "1" * 60,
     "Mounts": [{"Type": "bind", "Source": "/home/u/web", "Destination": "/workspace"}],
     "Config": {"Annotations": {"krun.disk.1.path": "/s/web/libkrun-containers.raw",
                                "krun.disk.0.path": "/s/web/libkrun-nix.raw",
                                "krun.disk.0.id": "agentbox-nix"}}},
])  # fmt: skip
APP = Task(name="app-0011223344556677", mode="container", project="/home/u/app",
           image="localhost/agentbox:latest", started=1796188186.0, pid=3992,
           container_id="bab39298119cb7c5656ccc1770cdf05628a20408f40d04331404ebf474fea525",
           holds=(("sidecar", "agentbox-nix-app-0123456789ab"),))  # fmt: skip
WEB = Task(name="web-8899aabbccddeeff", mode="libkrun", project="/home/u/web",
           image="quay.io/x/agentbox:2", started=1796188200.0, pid=4100,
           container_id="d00d" + "1" * 60,
           holds=(("disk", "/s/web/libkrun-nix.raw"),
                  ("disk", "/s/web/libkrun-containers.raw")))  # fmt: skip


def test_podman_ps_gives_the_tasks_and_not_the_sidecars_or_resize_guests() -> None:
    assert [c.name for c in inventory.parse_ps(PS)] == [APP.name, WEB.name]
    assert inventory.parse_ps(PS)[0] == Container(
        id=APP.container_id or "", name=APP.name, mode="container",
        image="localhost/agentbox:latest", pid=3992, started=1796188186.0,
        sidecar="agentbox-nix-app-0123456789ab",
    )  # fmt: skip
    assert inventory.parse_ps("") == []
    assert inventory.parse_ps("[]\n") == []


def test_a_container_not_running_is_no_task() -> None:
    created = json.loads(PS)[:1]
    created[0]["State"] = "created"
    assert inventory.parse_ps(json.dumps(created)) == []


def test_what_podman_ps_prints_that_is_not_json_is_an_error_naming_it() -> None:
    with pytest.raises(TaskError, match=r"^podman ps printed something that is not JSON: 'Err"):
        inventory.parse_ps("Error: no such thing\n")


def test_inspect_gives_the_project_and_the_krun_disks_in_order() -> None:
    assert inventory.parse_inspect(INSPECT) == {
        APP.container_id: ("/home/u/app", ()),
        WEB.container_id: ("/home/u/web", ("/s/web/libkrun-nix.raw",
                                           "/s/web/libkrun-containers.raw")),
    }  # fmt: skip


def test_container_tasks_ask_podman_twice_with_these_command_lines() -> None:
    runner = RecordingRunner()
    runner.script("podman", "ps", stdout=PS)
    runner.script("podman", "container", "inspect", stdout=INSPECT)
    assert inventory.container_tasks(runner) == [APP, WEB]
    assert runner.argvs == [
        ["podman", "ps", "--format", "json", "--filter", "label=agentbox.role"],
        ["podman", "container", "inspect", APP.container_id, WEB.container_id],
    ]
    debug = RecordingRunner()
    inventory.container_tasks(debug, debug=True)
    assert debug.argvs == [["podman", "--log-level=debug", "ps", "--format", "json", "--filter",
                            "label=agentbox.role"]]  # fmt: skip


def test_a_task_that_ended_before_inspect_shows_without_its_project() -> None:
    runner = RecordingRunner()
    runner.script("podman", "ps", stdout=PS)
    runner.script("podman", "container", "inspect", returncode=125, stdout="[]",
                  stderr="Error: no such container d00d\n")  # fmt: skip
    found = inventory.container_tasks(runner)
    assert [(t.name, t.project, t.holds) for t in found] == [
        (APP.name, None, APP.holds),
        (WEB.name, None, ()),
    ]


def test_without_podman_there_are_no_container_tasks_and_a_failing_podman_is_said() -> None:
    missing = RecordingRunner()
    missing.script("podman", returncode=127, stderr="podman: not found")
    assert inventory.container_tasks(missing) == []
    broken = RecordingRunner()
    broken.script("podman", "ps", returncode=125, stderr="Error: cannot re-exec process\n")
    with pytest.raises(TaskError, match=r"^podman ps failed: "):
        inventory.container_tasks(broken)


# /proc/locks (proc(5)): ordinal, type, mode, access, pid, MAJOR:MINOR:INODE, start, end; a
# blocked waiter's line has "->" after the ordinal.
LOCKS = """\
1: FLOCK  ADVISORY  READ 5886 fe:00:1786188 0 EOF
2: FLOCK  ADVISORY  READ 5890 fe:00:1786188 0 EOF
2: -> FLOCK  ADVISORY  WRITE 6001 fe:00:1786188 0 EOF
3: POSIX  ADVISORY  WRITE 812 00:19:2 0 EOF
4: OFDLCK ADVISORY  READ  -1 00:06:1028 0 EOF
"""


def test_proc_locks_lines_are_read_without_the_waiters() -> None:
    assert inventory.parse_locks(LOCKS) == [
        LockEntry("FLOCK", "READ", 5886, 1786188),
        LockEntry("FLOCK", "READ", 5890, 1786188),
        LockEntry("POSIX", "WRITE", 812, 2),
        LockEntry("OFDLCK", "READ", -1, 1028),
    ]
    assert inventory.parse_locks("garbage\n\n") == []


MICROVM_CONF = {
    "task_rootfs": "/s/app/tasks/app-00/rootfs-btrfs-snapshot", "ram_mib": 4096, "vcpus": 2,
    "workdir": "/workspace", "exec_path": "/usr/bin/agentbox-guest-init",
    "disks": [{"id": "agentbox-nix", "path": "/s/app/microvm-nix.raw", "readonly": False},
              {"id": "agentbox-containers", "path": "/s/app/microvm-containers.raw",
               "readonly": False}],
    "mounts": [], "workspace_source": "/home/u/app", "workspace_tag": "agentbox-workspace",
    "workspace_target": "/workspace", "task_lock": "/s/app/tasks/app-00/.task.lock",
}  # fmt: skip
LOFTD_CONF = {
    "task_rootfs": "/l/web/tasks/web-00/rootfs-fuse-overlay", "ram_mib": 4096, "vcpus": 2,
    "workdir": "/workspace", "exec_path": "/usr/bin/loftd-guest-init",
    "disks": [{"id": "loftd-containers", "path": "/l/web/loftd-containers.raw",
               "readonly": False}],
    "mounts": [{"source": "/home/u/web", "target": "/workspace", "readonly": False}],
    "image": "localhost/loftd:latest",
    "nix_overlay": {"lower": "/l/images/x/rootfs/nix", "upper": "/l/web/nix-overlay/upper",
                    "work": "/l/web/nix-overlay/work", "lease": "/l/web/nix-overlay/lease"},
}  # fmt: skip
HELPER = Holder(5890, ("/usr/bin/python3", "-m", "agentbox_krun.enter", "AGENTBOX_LIBKRUN_LIBRARY",
                       "/s/app/tasks/app-00/launch.conf"))  # fmt: skip
CLI = Holder(5886, ("/usr/bin/python3", "/home/u/.local/bin/agentbox", "microvm"))


def test_a_vm_task_is_its_helper_with_what_launch_conf_says() -> None:
    assert inventory.vm_task("app-00", "microvm", [CLI, HELPER], MICROVM_CONF, 17.5) == Task(
        name="app-00", mode="microvm", project="/home/u/app", image=None, started=17.5,
        pid=5890, container_id=None,
        holds=(("disk", "/s/app/microvm-nix.raw"), ("disk", "/s/app/microvm-containers.raw")),
    )  # fmt: skip
    loftd = inventory.vm_task("web-00", "loftd", [HELPER], LOFTD_CONF, None)
    assert (loftd.project, loftd.image, loftd.holds) == (
        "/home/u/web",
        "localhost/loftd:latest",
        (("disk", "/l/web/loftd-containers.raw"), ("nix-overlay", "/l/web/nix-overlay")),
    )


def test_a_vm_task_still_setting_up_is_its_command_line() -> None:
    task = inventory.vm_task("app-00", "microvm", [CLI], None, 1.0)
    assert (task.pid, task.project, task.holds) == (5886, None, ())


HOLD = """\
import sys, time
from agentbox_state.lock import FileLock
lock = FileLock(sys.argv[1], what="task")
lock.acquire(shared=True)
print("held", flush=True)
time.sleep(60)
"""


def test_vm_tasks_are_the_task_dirs_whose_lock_a_live_process_holds(tmp_path: Path) -> None:
    """A real flock held by a child named like the helper, read back from the real
    /proc/locks; a task dir whose lock nobody holds (a killed run's) is not listed."""
    base = tmp_path / "agentbox"
    live = base / "workspaces" / "app-0123456789ab" / "tasks" / "app-0011223344556677"
    dead = base / "workspaces" / "app-0123456789ab" / "tasks" / "app-8899aabbccddeeff"
    for d in (live, dead):
        d.mkdir(parents=True)
        (d / ".task.lock").touch()
    (live / "launch.conf").write_text(json.dumps(MICROVM_CONF))
    argv = [sys.executable, "-c", HOLD, str(live / ".task.lock"), "agentbox_krun.enter"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "held\n"
            found = inventory.vm_tasks([("microvm", base), ("loftd", tmp_path / "none")])
            assert [(t.name, t.mode, t.pid, t.project) for t in found] == [
                ("app-0011223344556677", "microvm", child.pid, "/home/u/app")
            ]
            assert found[0].started == (live / ".task.lock").stat().st_mtime
        finally:
            child.kill()
    assert inventory.vm_tasks([("microvm", base)]) == []  # its holder is gone


def test_inventory_lists_the_oldest_first_and_finds_by_name_or_id(tmp_path: Path) -> None:
    runner = RecordingRunner()
    runner.script("podman", "ps", stdout=PS)
    runner.script("podman", "container", "inspect", stdout=INSPECT)
    tasks = inventory.inventory(runner, [("microvm", tmp_path)])
    assert tasks == [APP, WEB]
    assert inventory.find(tasks, WEB.name) == WEB
    assert inventory.find(tasks, APP.container_id or "") == APP
    with pytest.raises(TaskError, match=r"^no running agentbox task is called 'sshd'; nothing "
                       r"was signalled$") as err:  # fmt: skip
        inventory.find(tasks, "sshd")
    assert err.value.hint == "'agentbox ps' lists the running tasks by name"


def test_stop_and_kill_of_a_container_task_are_podman_stop_and_podman_kill() -> None:
    """podman-stop(1): the container's stop signal (SIGTERM), SIGKILL after --time (10 s);
    podman-kill(1): --signal KILL."""
    cid = APP.container_id
    assert inventory.plan_signal(APP, force=False).argv == ("podman", "stop", cid)
    assert inventory.plan_signal(APP, force=True).argv == (
        "podman",
        "kill",
        "--signal",
        "KILL",
        cid,
    )
    assert inventory.plan_signal(APP, force=False, debug=True).argv == (
        "podman",
        "--log-level=debug",
        "stop",
        cid,
    )


def test_stop_and_kill_of_a_vm_task_signal_its_helper() -> None:
    vm = inventory.vm_task("app-00", "microvm", [CLI, HELPER], MICROVM_CONF, 1.0)
    stop = inventory.plan_signal(vm, force=False)
    kill = inventory.plan_signal(vm, force=True)
    assert (stop.argv, stop.pid, stop.signal) == ((), 5890, signal.SIGTERM)
    assert (kill.argv, kill.pid, kill.signal) == ((), 5890, signal.SIGKILL)
    assert (stop.describe(), kill.describe()) == ("kill -TERM 5890", "kill -KILL 5890")
    bare = inventory.vm_task("app-00", "microvm", [], None, 1.0)
    with pytest.raises(TaskError, match=r"^task app-00 has no process to signal yet$"):
        inventory.plan_signal(bare, force=False)


def test_send_signals_a_real_process_and_waits_for_its_end() -> None:
    from agentbox_cli.tasks.deliver import send

    with subprocess.Popen(["sleep", "60"]) as child:
        assert send(inventory.Signal(pid=child.pid), RecordingRunner(), wait=5.0)
        assert child.wait(timeout=5) == -signal.SIGTERM
    stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 60"])
    with stubborn:
        time.sleep(0.2)  # its trap is set
        start = time.monotonic()
        assert not send(inventory.Signal(pid=stubborn.pid), RecordingRunner(), wait=0.5)
        assert 0.5 <= time.monotonic() - start < 3
        assert send(inventory.Signal(pid=stubborn.pid, signal=signal.SIGKILL), RecordingRunner(),
                    wait=5.0)  # fmt: skip
    assert send(inventory.Signal(pid=stubborn.pid), RecordingRunner(), wait=1.0)  # gone already


def test_a_task_under_an_allow_list_names_its_denial_log() -> None:
    record = json.loads(PS)[0]
    record["Labels"]["agentbox.egress-log"] = "/s/ws/egress/app-0011223344556677.denied.jsonl"
    [found] = inventory.parse_ps(json.dumps([record]))
    assert found.egress_log == "/s/ws/egress/app-0011223344556677.denied.jsonl"
    task = inventory.container_task(found, ("/home/u/app", ()))
    log = "/s/ws/egress/app-0011223344556677.denied.jsonl"
    assert task.holds == (("sidecar", "agentbox-nix-app-0123456789ab"), ("egress-log", log))
