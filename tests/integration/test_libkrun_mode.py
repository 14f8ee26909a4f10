"""Libkrun mode on a host without crun's krun handler (this one): clear refusals that create
nothing, and the disk maintenance verbs with their live-use probe against real Podman."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentbox_state.workspace import Workspace
from agentbox_testing import require, run_as_user

pytestmark = [pytest.mark.root, pytest.mark.btrfs, pytest.mark.podman, pytest.mark.image]

AGENTBOX_IMAGE = "localhost/agentbox:latest"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conftest import Home


def state_dir(home: Home) -> Path:
    return home.home / ".local/state/agentbox/workspaces" / Workspace.from_path(home.project).key


def test_default_mode_refuses_without_the_krun_handler(home: Home, agentbox: Path,
                                                       tree: object) -> None:  # fmt: skip
    before = tree(home.root)  # type: ignore[operator]
    for argv in ([], ["--", "true"], ["libkrun", "--", "true"]):
        out = home.run(agentbox, *argv)
        assert out.returncode == 1, out.stderr
        first, hint = out.stderr.splitlines()
        assert first.startswith("agentbox: libkrun mode is not available here: ")
        assert "`agentbox container` runs the same image" in hint
    assert tree(home.root) == before, "nothing may be created"  # type: ignore[operator]


def test_dry_run_prints_the_plan_and_creates_nothing(home: Home, agentbox: Path) -> None:
    out = home.run(agentbox, "--dry-run", "libkrun", "--mem", "2", "-p", "8080:80", "--", "id")
    assert out.returncode == 0, out.stderr
    assert "--annotation krun.ram_mib=2048" in out.stdout
    assert "--publish 8080:80" in out.stdout
    assert not state_dir(home).exists()


def digest(path: Path) -> tuple[int, int, str]:
    """Size, mtime and filesystem UUID: a reformat, a resize or a write shows in one of them
    (the file is a 64 GiB sparse image: too big to hash)."""
    st = path.stat()
    uuid = subprocess.run(["blkid", "-p", "-o", "value", "-s", "UUID", str(path)],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    return st.st_size, st.st_mtime_ns, uuid


def test_reset_nix_needs_force_first_and_replaces_the_disk(home: Home, agentbox: Path) -> None:
    refused = home.run(agentbox, "libkrun", "reset-nix")
    assert refused.returncode == 2
    assert "refusing without --force" in refused.stderr
    assert not state_dir(home).exists(), "checked before any probing or file access"
    done = home.run(agentbox, "libkrun", "reset-nix", "--force")
    assert done.returncode == 0, done.stderr
    disk = state_dir(home) / "libkrun-nix.raw"
    label = subprocess.run(["blkid", "-p", "-o", "value", "-s", "LABEL", str(disk)],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert label == "AGENTBOX_NIX"


def test_disk_attached_to_a_running_container_is_left_alone(home: Home, agentbox: Path) -> None:
    require(os.geteuid() == 0, "needs root's podman")
    assert home.run(agentbox, "libkrun", "reset-nix", "--force").returncode == 0
    disk = state_dir(home) / "libkrun-nix.raw"
    before = digest(disk)
    name = f"agentbox-probe-{os.getpid()}"
    holder = ["podman", "run", "--detach", "--rm", "--runtime", "runc", "--name", name,
              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
              "--annotation", f"krun.disk.0.path={disk}", "--entrypoint", "sleep",
              "localhost/agentbox:latest", "60"]  # fmt: skip
    subprocess.run(holder, check=True, capture_output=True)
    try:
        for argv in (["libkrun", "reset-nix", "--force"],
                     ["libkrun", "resize", "--target", "nix", "--size", "128"]):  # fmt: skip
            out = home.run(agentbox, *argv)
            assert out.returncode == 1, out.stderr
            assert f"is attached to the running container {name}; nothing was changed" in out.stderr
            assert digest(disk) == before
    finally:
        subprocess.run(["podman", "rm", "--force", name], check=False, capture_output=True)


def test_resize_checks_everything_first(home: Home, agentbox: Path) -> None:
    missing = home.run(agentbox, "libkrun", "resize", "--target", "nix", "--size", "128")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
    assert home.run(agentbox, "libkrun", "reset-nix", "--force").returncode == 0
    disk = state_dir(home) / "libkrun-nix.raw"
    size = disk.stat().st_size
    for argv, message in (
        (["--target", "nix", "--size", "64"], "is the same as its current size 64GiB"),
        (["--target", "nix", "--size", "32G"], "is smaller than its current size 64GiB"),
        (["--target", "swap", "--size", "128"], "--target 'swap' is not nix or containers"),
        (["--target", "nix", "--size", "1.5T"], "invalid --size '1.5T'"),
        (["--target", "nix", "--size", "128"], "libkrun mode is not available here"),
    ):
        out = home.run(agentbox, "libkrun", "resize", *argv)
        assert out.returncode != 0
        assert message in out.stderr, out.stderr
        assert disk.stat().st_size == size
    assert json.loads(home.run(agentbox, "paths", "--json").stdout)["workspace_slug"] == "project"


def fake_crun(root: Path) -> str:
    """A PATH with a `crun` that claims the krun handler, for `crun --version` only: it gets
    agentbox past the handler check (this host has no crun with +LIBKRUN) to what follows."""
    bin_dir = root / "fake-crun-bin"
    bin_dir.mkdir()
    crun = bin_dir / "crun"
    crun.write_text("#!/bin/sh\nprintf 'crun version 1.21\\n+SYSTEMD +LIBKRUN\\n'\n")
    crun.chmod(0o755)
    return f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"


def test_without_hardware_kvm_libkrun_mode_refuses_at_once(home: Home, agentbox: Path,
                                                           tree: object) -> None:  # fmt: skip
    """On this host /dev/kvm is kvm-pvm: no ordinary guest kernel boots (libkrun spins about a
    minute, then exits). The kvm check refuses first, quickly, creating nothing. A fake crun
    stands in for the handler check, which comes first and would refuse here already: this
    tests our order (handler check, kvm check, then anything else)."""
    from agentbox_krun import kvm

    if kvm.problem(kvm.probe()) is None:
        pytest.skip("this host's KVM boots guests: the refusal cannot be shown here")
    path = fake_crun(home.root)
    assert home.run(agentbox, "libkrun", "reset-nix", "--force").returncode == 0
    disk = state_dir(home) / "libkrun-nix.raw"
    before, size = tree(home.root), disk.stat().st_size  # type: ignore[operator]
    for argv in ([], ["--", "true"], ["libkrun", "--tsi", "--", "true"],
                 ["libkrun", "resize", "--target", "nix", "--size", "128"]):  # fmt: skip
        started = time.monotonic()
        out = home.run(agentbox, *argv, PATH=path)
        assert time.monotonic() - started < 10
        assert out.returncode == 1, out.stderr
        first, hint = out.stderr.splitlines()
        assert first.startswith("agentbox: libkrun mode cannot start a VM here: /dev/kvm "), first
        assert "AGENTBOX_SKIP_KVM_CHECK=1 skips this check" in hint
        assert tree(home.root) == before, "nothing may be created"  # type: ignore[operator]
        assert disk.stat().st_size == size
    dry = home.run(agentbox, "--dry-run", "--", "true", PATH=path)
    assert dry.returncode == 0, "a dry run asks nothing of KVM"


def test_resize_with_a_missing_image_leaves_the_disk_alone(home: Home, agentbox: Path) -> None:
    require(shutil.which("podman") is not None, "podman is missing (apt-get install podman)")
    assert home.run(agentbox, "libkrun", "reset-nix", "--force").returncode == 0
    disk = state_dir(home) / "libkrun-nix.raw"
    before = digest(disk)
    image = f"localhost/agentbox-missing-{os.getpid()}:none"
    out = home.run(agentbox, "--image", image, "libkrun", "resize", "--target", "nix",
                   "--size", "128", PATH=fake_crun(home.root),
                   AGENTBOX_SKIP_KVM_CHECK="1")  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert out.stderr.splitlines()[0] == (
        f"agentbox: image {image} is not in local storage; nothing was changed"
    )
    assert digest(disk) == before


ZOMBIE_LEADER = """
import ctypes, threading, time
threading.Thread(target=time.sleep, args=(600,)).start()
ctypes.CDLL(None).syscall(60, 0)  # SYS_exit (x86_64): the main thread ends, one thread lives
"""
WATCHDOG = """
import json, sys, time
from agentbox_cli.libkrun.task import VmStoppedError, run_task
from agentbox_cli.libkrun.watchdog import Timing
from agentbox_podman.podman import RunSpec
from agentbox_state.runner import SubprocessRunner
import os

name, marker, code, userns = sys.argv[1:5]
spec = RunSpec(image="localhost/agentbox:latest", name=name, entrypoint="/usr/bin/python3",
               command=("-c", code, marker), userns=userns or None, user="0:0")
started = time.monotonic()
notices = []
try:
    status = run_task(SubprocessRunner(os.environ), spec, notice=notices.append,
                      timing=Timing(interval=0.2, grace=1.0, settle=3.0, term_wait=3.0))
    result = {"status": status}
except VmStoppedError as err:
    result = {"error": err.message, "hint": err.hint}
result["took"] = time.monotonic() - started
result["notices"] = notices
print(json.dumps(result))
"""


def leftover_processes(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read().split(b"\0"):
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


def check_watchdog_result(out: subprocess.CompletedProcess[str], name: str, marker: str) -> None:
    assert out.returncode == 0, out.stderr
    print(out.stdout, out.stderr)  # shown when the test fails
    result = json.loads(out.stdout.splitlines()[-1])
    assert result.get("error") == (
        f"the VM of task {name} stopped, but podman run did not return; agentbox stopped "
        "podman run and removed the container"
    )
    assert result["hint"].startswith("rerun with --debug")
    # The stuck thread sleeps 600 s: podman run would wait that long. Podman's own calls (the
    # start, the inspects, the rm) take most of this; with other tests sharing the test user's
    # storage they took 100 s here once (the watchdog's part stayed a second and a stop).
    assert result["took"] < 150, "container start + grace + the stop, not forever"
    assert result["notices"] == []
    assert leftover_processes(marker) == [], "the stuck process was killed"


def runc_conf(root: Path) -> Path:
    """This host's quirks (HOST-NOTES): crun fails on hybrid cgroups, default ulimits cannot be
    applied; runc stands in for crun's krun handler, which it is not: the stuck process here is
    an ordinary container's, the same shape as a VMM whose leader exited."""
    conf = root / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
                    '[engine]\nruntime = "runc"\n')  # fmt: skip
    conf.chmod(0o644)
    return conf


def test_the_watchdog_ends_a_podman_run_whose_container_leader_is_a_zombie(tmp_path: Path) -> None:
    """Real rootful Podman: the container's main process ends its leader thread while another
    thread lives, so the container never exits and `podman run` would wait forever (the shape
    of a VM that stopped after crun handed over). The watchdog sees the zombie leader, kills
    it, and agentbox reports the stopped VM; the container and the process are gone."""
    require(os.geteuid() == 0, "needs root's podman")
    require(subprocess.run(["podman", "image", "exists", AGENTBOX_IMAGE]).returncode == 0,
            f"{AGENTBOX_IMAGE} is missing: build it with agentbox image build")  # fmt: skip
    name, marker = f"agentbox-watchdog-{os.getpid()}", f"zombie-leader-{os.getpid()}"
    env = {**os.environ, "CONTAINERS_CONF": str(runc_conf(tmp_path))}
    try:
        out = subprocess.run([sys.executable, "-c", WATCHDOG, name, marker, ZOMBIE_LEADER, ""],
                             capture_output=True, text=True, timeout=120, env=env,
                             stdin=subprocess.DEVNULL)  # fmt: skip
        check_watchdog_result(out, name, marker)
        gone = subprocess.run(["podman", "container", "exists", name], env=env)
        assert gone.returncode == 1, "the container was removed"
    finally:
        for pid in leftover_processes(marker):
            os.kill(pid, 9)
        subprocess.run(["podman", "rm", "--force", "--ignore", name], capture_output=True,
                       env=env)  # fmt: skip


def test_the_watchdog_ends_a_rootless_keep_id_task_too(user_image: str) -> None:
    """As an ordinary user with --userns keep-id: the stuck process runs as a subordinate id,
    and the user may still kill it (the user namespace is theirs)."""
    name, marker = f"agentbox-watchdog-u{os.getpid()}", f"zombie-leader-u{os.getpid()}"
    try:
        out = run_as_user(
            WATCHDOG.replace("sys.argv[1:5]", repr([name, marker, ZOMBIE_LEADER, "keep-id"])),
            packages=["agentbox_cli", "agentbox_state", "agentbox_podman", "agentbox_storage",
                      "agentbox_krun", "loftd", "agentbox_guest_init"],
            cwd="/tmp", timeout=180,
        )  # fmt: skip
        check_watchdog_result(out, name, marker)
    finally:
        for pid in leftover_processes(marker):
            os.kill(pid, 9)
        subprocess.run(["runuser", "-u", user_image, "--", "podman", "rm", "--force", "--ignore",
                        name], capture_output=True, cwd="/tmp")  # fmt: skip


# A libkrun task as plan_libkrun makes it with --debug (podman --log-level=debug run, krun
# annotations, the mounts, /dev/net/tun, the guest's env), run by run_task with the default
# timing; runc stands in for crun (this host has no crun with the krun handler) and /bin/sh
# for the guest init (which would look for the VM's disks).
LIBKRUN_TASK = """
import dataclasses, json, os, sys, tempfile, time
from pathlib import Path
from agentbox_cli.libkrun.plan import KrunHost, LibkrunRequest, plan_libkrun
from agentbox_cli.libkrun.task import VmStoppedError, run_task
from agentbox_cli.libkrun.watchdog import Timing
from agentbox_state.runner import SubprocessRunner

p = json.loads(sys.argv[1])
root = Path(p["root"] or tempfile.mkdtemp(prefix="agentbox-watchdog-"))
host = KrunHost(uid=os.getuid(), gid=os.getgid(), home=root / "home", cwd=root / "project",
                mem_total_kib=4 * 1024 * 1024, cpus=2, stdin_tty=False, stdout_tty=False)
req = LibkrunRequest(image="localhost/agentbox:latest", workspace_key="project-watchdog",
                     hostname="project-agentbox", task_name=p["name"], state_dir=root / "state",
                     sccache=root / "sccache", command=("-c", p["script"]), debug=True)
plan = plan_libkrun(req, host)
for d in (host.cwd, *plan.host_dirs):
    d.mkdir(parents=True, exist_ok=True)
spec = dataclasses.replace(plan.run, runtime="runc", entrypoint="/bin/sh")
notices = []
started = time.monotonic()
try:
    result = {"status": run_task(SubprocessRunner(os.environ), spec, notice=notices.append,
                                 timing=Timing(**p["timing"]))}
except VmStoppedError as err:
    result = {"error": err.message}
result.update(took=time.monotonic() - started, notices=notices, argv=spec.argv())
if not p["root"]:
    import shutil
    shutil.rmtree(root, ignore_errors=True)
print(json.dumps(result))
"""


def podman_waits_after_exit_with_debug() -> bool:
    """podman#19075: Podman before 4.6 with --log-level=debug and no /dev/log (this host) waits
    ~20 s after the container exits (its cleanup process logs to syslog)."""
    out = subprocess.run(["podman", "version", "--format", "{{.Client.Version}}"],
                         capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    major, minor = (int(x) for x in [*out.split("."), "0", "0"][:2])
    return (major, minor) < (4, 6) and not os.path.exists("/dev/log")


def run_libkrun_task(tmp_path: Path, name: str, script: str, **timing: float) -> dict[str, Any]:
    require(os.geteuid() == 0, "needs root's podman")
    require(subprocess.run(["podman", "image", "exists", AGENTBOX_IMAGE]).returncode == 0,
            f"{AGENTBOX_IMAGE} is missing: build it with agentbox image build")  # fmt: skip
    env = {**os.environ, "CONTAINERS_CONF": str(runc_conf(tmp_path))}
    params = {"root": str(tmp_path), "name": name, "script": script, "timing": timing}
    try:
        out = subprocess.run([sys.executable, "-c", LIBKRUN_TASK, json.dumps(params)],
                             capture_output=True, text=True, timeout=180, env=env,
                             stdin=subprocess.DEVNULL)  # fmt: skip
        print(out.stdout, out.stderr[-3000:])  # shown when the test fails
        assert out.returncode == 0, out.stderr[-3000:]
        result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
        assert result["argv"][:3] == ["podman", "--log-level=debug", "run"]
        assert "time=" in out.stderr, "podman's own debug log"
        gone = subprocess.run(["podman", "container", "exists", name], env=env)
        assert gone.returncode == 1, "the container is gone"
        return result
    finally:
        subprocess.run(["podman", "rm", "--force", "--ignore", name], capture_output=True,
                       env=env)  # fmt: skip


def test_a_debug_task_whose_podman_run_is_slow_after_a_normal_exit_succeeds(
    tmp_path: Path,
) -> None:
    """The slow exit of podman#19075 is not a stopped VM: with the default timing (grace 10 s,
    exit grace 60 s) the task's podman run returns on its own after its ~20 s wait, status 0,
    no notice. (The watchdog before this used to stop it after 10 s with VmStoppedError.)"""
    slow = podman_waits_after_exit_with_debug()
    result = run_libkrun_task(tmp_path, f"agentbox-slow-exit-{os.getpid()}", "exit 0")
    assert result.get("error") is None, result
    assert result["status"] == 0
    assert result["notices"] == []
    if slow:
        assert result["took"] > 15, "podman#19075's wait: longer than the grace"


def test_a_debug_task_past_the_exit_grace_is_stopped_with_its_own_status(tmp_path: Path) -> None:
    """The same slow podman run with a 3 s exit grace: stopped, the container removed, and the
    result is the container's own status (7) with a one-line notice, not an error."""
    if not podman_waits_after_exit_with_debug():
        pytest.skip("podman returns at once after the container exits here (no podman#19075)")
    name = f"agentbox-slow-exit-7-{os.getpid()}"
    result = run_libkrun_task(tmp_path, name, "exit 7", exit_grace=3.0)
    assert result.get("error") is None, result
    assert result["status"] == 7
    assert result["took"] < 15, "the exit grace, the stop, not podman's 20 s"
    assert result["notices"] == [
        f"agentbox: task {name} exited with status 7, but podman run had not returned 3 s later; "
        "agentbox stopped it and removed the container (podman before 4.6 with "
        "--log-level=debug and no /dev/log: podman#19075)"
    ]


def test_a_rootless_debug_task_slow_after_a_normal_exit_succeeds_too(user_image: str) -> None:
    """As an ordinary user (--userns keep-id): rootless Podman 4.3 waits the same ~20 s after
    the exit with --log-level=debug; the task still ends with its status, no VmStoppedError."""
    slow = podman_waits_after_exit_with_debug()
    name = f"agentbox-slow-exit-u{os.getpid()}"
    params = {"root": "", "name": name, "script": "exit 0", "timing": {}}
    try:
        out = run_as_user(
            LIBKRUN_TASK.replace("sys.argv[1]", repr(json.dumps(params))),
            packages=["agentbox_cli", "agentbox_state", "agentbox_podman", "agentbox_storage",
                      "agentbox_krun", "loftd", "agentbox_guest_init"],
            cwd="/tmp", timeout=180,
        )  # fmt: skip
        print(out.stdout, out.stderr[-3000:])  # shown when the test fails
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.splitlines()[-1])
        assert result["argv"][:3] == ["podman", "--log-level=debug", "run"]
        assert "--userns" in result["argv"]
        assert result.get("error") is None, result
        assert (result["status"], result["notices"]) == (0, [])
        if slow:
            assert result["took"] > 15, "podman#19075's wait: longer than the grace"
    finally:
        subprocess.run(["runuser", "-u", user_image, "--", "podman", "rm", "--force", "--ignore",
                        name], capture_output=True, cwd="/tmp")  # fmt: skip
