"""`agentbox microvm` and `loftd` through the whole host pipeline for real (Buildah ingest of a
locally built image, a task root, real raw disks, a real launch.conf, the helper process with its
mounts, cleanup), with a stub libkrun compiled from C standing in for the VM. The stub's
krun_start_enter runs a script on the root it was given, as the guest would see it: that is how
these tests look inside the "VM". As root, and as the ordinary test user."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentbox_krun.sizing import vcpus
from agentbox_state.workspace import Workspace
from agentbox_testing import btrfs_loop, require, require_root, require_test_user
from agentbox_testing.stubvm import compile_stub
from loftd.guest import STATUS_PATH

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conftest import Home, UserBox

ROOT = Path(__file__).resolve().parents[2]
STUB = ROOT / "packages" / "agentbox-krun" / "tests" / "stub" / "libkrun_stub.c"
pytestmark = [pytest.mark.root, pytest.mark.btrfs, pytest.mark.podman, pytest.mark.libkrun]

IMAGE = "localhost/agentbox-tiny:microvm"
# The stub is no VM: the kvm check (which refuses this host's kvm-pvm) is skipped for its runs,
# as the README documents; test_the_kvm_check_* run without it.
SKIP_KVM = {"AGENTBOX_SKIP_KVM_CHECK": "1", "LOFTD_SKIP_KVM_CHECK": "1"}

# A tiny image shaped like the agentbox image (see the script); also used by bench/microvm.py.
BUILD = Path(__file__).with_name("tiny-image.sh").read_text()

# What "the guest" reports: its uid, whether its root is a btrfs subvolume (inode 256), the guest
# init and /nix as it sees them, and the workspace; then it changes /nix.
ON_ENTER = r"""#!/bin/sh
r="$1"
{
  echo "uid=$(id -u)"
  echo "root-inode=$(stat -c %i "$r")"
  [ -x "$r/usr/bin/agentbox-guest-init" ] && echo guest-init=ok
  cat "$r/nix/store/0000-image/marker" 2>/dev/null
  ls "$r/nix/store"
  [ -f "$r/workspace/README" ] && echo "workspace=$(cat "$r/workspace/README")" &&
    echo made > "$r/workspace/made-by-guest"
  echo "task-$$" > "$r/nix/store/from-task" 2>/dev/null && echo nix-writable
  # replace a directory that came from the image (an overlay "opaque" dir: needs working xattrs)
  rm -rf "$r/nix/store/0000-image" && mkdir "$r/nix/store/0000-image" && echo dir-replaced
} > "$(dirname "$0")/seen.txt" 2>&1
"""


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    require_root("rootful buildah storage")
    require(shutil.which("buildah") is not None, "buildah is missing (apt-get install buildah)")
    subprocess.run(["sh", "-c", BUILD, "build", IMAGE], check=True, capture_output=True)
    yield IMAGE
    subprocess.run(["buildah", "rmi", IMAGE], check=False, capture_output=True)


def report_line(line: str | None) -> str:
    """The guest init's report at the end of an on-enter script (None: it reports nothing),
    in the guest report's format (agentbox_guest_init.report; read by loftd.guest)."""
    if line is None:
        return ""
    path = '"$1"' + STATUS_PATH
    return f'mkdir -p "$(dirname {path})" && echo "{line}" > {path}\n'


@pytest.fixture
def home(home: Home) -> Home:
    home.extra_env = dict(SKIP_KVM)
    return home


class Stub:
    """The stub library, its call log and the on-enter script's report, in one dir. Its "guest"
    reports that the command exited with ``status`` (the status libkrun then exits with), or
    ``reports`` when that is a line, or nothing when it is False."""

    def __init__(self, where: Path, status: int, fail: str | None = None, *,
                 reports: bool | str = True) -> None:  # fmt: skip
        where.mkdir(parents=True, exist_ok=True)
        self.dir = where
        self.log = where / "calls.log"
        self.seen = where / "seen.txt"
        self.reported = (f"exited {status}" if reports is True else reports) or None
        script = where / "on-enter"
        self.on_enter(ON_ENTER)
        self.lib = compile_stub(STUB, where, script, status=status, fail=fail)

    def on_enter(self, body: str) -> None:
        """What "the guest" does (a shell script; $1 is its root), then its report."""
        script = self.dir / "on-enter"
        script.write_text(body.rstrip("\n") + "\n" + report_line(self.reported))
        script.chmod(0o755)

    def calls(self) -> list[str]:
        calls = self.log.read_text().splitlines()
        self.log.unlink()
        return calls

    def report(self) -> list[str]:
        return self.seen.read_text().splitlines()


def state_of(home: Home, app: str = "agentbox") -> Path:
    return home.home / f".local/state/{app}/workspaces" / Workspace.from_path(home.project).key


def profile_rows(stderr: str) -> dict[str, str]:
    report = stderr.split("host profile\n", 1)[1]
    return dict(line.strip().split(": ", 1) for line in report.splitlines() if ": " in line)


PHASES = ["image_reference_resolution", "image_cache_ensure", "storage_backend_selection",
          "task_rootfs_materialization", "guest_init_resolution", "persistent_disk_preparation",
          "launch_config_build", "helper_session", "task_state_cleanup"]  # fmt: skip


def test_full_pipeline_with_the_stub(home: Home, agentbox: Path, image: str,
                                     tmp_path: Path) -> None:  # fmt: skip
    stub = Stub(tmp_path / "stub", 42)
    (home.project / "README").write_text("mine\n")
    out = home.run(agentbox, "--image", image, "--profile", "--debug", "microvm", "--", "echo",
                   "hi", AGENTBOX_LIBKRUN_LIBRARY=str(stub.lib))  # fmt: skip
    assert out.returncode == 42, out.stderr
    calls = stub.calls()
    state = state_of(home)
    assert calls[:3] == ["krun_set_log_level 0", "krun_create_ctx", "krun_set_vm_config 7 "
                         f"{vcpus(os.cpu_count() or 1)} 4096"]  # fmt: skip
    assert calls[3].startswith(f"krun_set_root 7 {state}/tasks/project-")
    assert calls[3].endswith("/rootfs-fuse-overlay")  # /tmp is not btrfs: auto chose the overlay
    assert calls[4:6] == [
        f"krun_add_disk 7 agentbox-nix {state}/microvm-nix.raw 0",
        f"krun_add_disk 7 agentbox-containers {state}/microvm-containers.raw 0",
    ]
    assert f"krun_add_virtiofs3 7 agentbox-workspace {home.project} 0 0" in calls
    assert "krun_set_exec 7 /usr/bin/agentbox-guest-init" in calls
    assert calls[-2:] == ["krun_start_enter 7", "on_enter 0"]
    argv = [c.split("=", 1)[1] for c in calls if c.startswith("  argv[")]
    assert argv == ["agentbox-guest-init", "microvm", "enter", "--", "echo", "hi"]
    env = [c.split("=", 1)[1] for c in calls if c.startswith("  env[")]
    assert "AGENTBOX_MICROVM_WORKSPACE_TAG=agentbox-workspace" in env
    assert "AGENTBOX_LIBKRUN_NIX_OVERLAY=1" in env  # microvm's /nix is a disk the guest mounts
    # --profile --debug: the guest init prints its own report too; it reports how the command
    # ended through the task root
    assert {"AGENTBOX_GUEST_PROFILE=1", "AGENTBOX_GUEST_DEBUG=1",
            f"AGENTBOX_GUEST_STATUS_FILE={STATUS_PATH}"} <= set(env)  # fmt: skip
    # --debug reaches every Buildah call, the ingest child's too
    echoed = [line for line in out.stderr.splitlines() if line.startswith("+ ")]
    tools = [line.split() for line in echoed if line.split()[1] in ("buildah", "podman")]
    assert tools, out.stderr
    assert [t for t in tools if t[2] != "--log-level=debug"] == []
    assert [line for line in echoed if " -m loftd.ingest --debug " in line], out.stderr
    seen = stub.report()
    assert seen[0] == "uid=0"
    assert seen[1].startswith("root-inode=")
    assert seen[2] == "guest-init=ok"
    assert "from-image" in seen  # the task root is the image's
    assert not [s for s in seen if s.startswith("workspace=")]  # virtiofs, not grafted
    assert list((state / "tasks").iterdir()) == [], "the task root and state must be gone"
    for disk in ("microvm-nix.raw", "microvm-containers.raw"):
        blkid = ["blkid", "-p", "-o", "value", "-s", "TYPE", str(state / disk)]
        label = subprocess.run(blkid, capture_output=True, text=True, check=True).stdout.strip()
        assert label == "btrfs"
    rows = profile_rows(out.stderr)
    assert [p for p in PHASES if p not in rows] == []
    assert (rows["storage_mode"], rows["image_cache"]) == ("fuse-overlay", "miss")
    again = home.run(agentbox, "--image", image, "--profile", "--debug", "microvm", "--", "true",
                     AGENTBOX_LIBKRUN_LIBRARY=str(stub.lib))  # fmt: skip
    assert again.returncode == 42, again.stderr
    assert profile_rows(again.stderr)["image_cache"] == "hit"


@pytest.fixture
def btrfs_home(tmp_path: Path, home_at: Callable[[Path], Home]) -> Iterator[Home]:
    """A HOME on a real btrfs, so the image cache and task roots are on btrfs."""
    with btrfs_loop(tmp_path / "disk.img", tmp_path / "mnt") as mnt:
        home = home_at(mnt)
        home.extra_env = dict(SKIP_KVM)
        yield home


def test_a_rebuilt_tag_is_ingested_again(home: Home, agentbox: Path, image: str,
                                         tmp_path: Path) -> None:  # fmt: skip
    stub = Stub(tmp_path / "stub", 0)

    def run() -> tuple[str, list[str]]:
        out = home.run(agentbox, "--image", image, "--profile", "--debug", "microvm", "--",
                       "true", AGENTBOX_LIBKRUN_LIBRARY=str(stub.lib))  # fmt: skip
        assert out.returncode == 0, out.stderr
        return profile_rows(out.stderr)["image_cache"], stub.report()

    def image_id() -> str:
        return subprocess.run(["buildah", "inspect", "--type", "image", "--format",
                               "{{.FromImageID}}", image], capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip

    assert run()[0] == "miss"
    assert run()[0] == "hit"
    replaced = [image_id()]
    try:
        subprocess.run(["sh", "-c", BUILD, "build", image, "rebuilt"], check=True,
                       capture_output=True)  # fmt: skip
        replaced.append(image_id())
        cached, seen = run()
        assert cached == "miss"  # the tag now names other content: not the cached one
        assert "rebuilt" in seen
    finally:
        subprocess.run(["sh", "-c", BUILD, "build", image], check=True, capture_output=True)
        # the images the tag no longer names
        subprocess.run(["buildah", "rmi", *replaced], check=False, capture_output=True)


def test_btrfs_snapshot_task_root_end_to_end(btrfs_home: Home, agentbox: Path, image: str,
                                             tmp_path: Path) -> None:  # fmt: skip
    home = btrfs_home
    stub = Stub(tmp_path / "stub", 0)
    out = home.run(agentbox, "--image", image, "--profile", "--debug", "microvm", "--", "true",
                   AGENTBOX_LIBKRUN_LIBRARY=str(stub.lib))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert profile_rows(out.stderr)["storage_mode"] == "btrfs-snapshot"  # auto, on btrfs
    calls = stub.calls()
    assert calls[3].endswith("/rootfs-btrfs-snapshot")
    seen = stub.report()
    assert "root-inode=256" in seen  # the guest's root was a subvolume: a snapshot
    assert "guest-init=ok" in seen
    assert list((state_of(home) / "tasks").iterdir()) == []
    subvolumes = subprocess.run(["btrfs", "subvolume", "list", "-o", str(home.root)],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "tasks" not in subvolumes  # the task's snapshot was deleted, the cache kept
    assert "images/sha256/" in subvolumes


def test_helper_failures_are_told_from_the_guests_status(home: Home, agentbox: Path, image: str,
                                                         tmp_path: Path) -> None:  # fmt: skip
    failing = Stub(tmp_path / "failing", 0, fail="krun_set_root:13")
    out = home.run(agentbox, "--image", image, "microvm", "--", "true",
                   AGENTBOX_LIBKRUN_LIBRARY=str(failing.lib))  # fmt: skip
    assert out.returncode == 125
    assert out.stderr.splitlines() == [
        "libkrun helper: libkrun setup failed: krun_set_root failed: EACCES (Permission denied)",
        "agentbox: agentbox microvm: the libkrun helper failed while configuring libkrun (exit "
        "status 125)",
        "hint: its own message is above; rerun with --preserve-debug to keep the task root and "
        "launch.conf for a look",
    ]
    assert list((state_of(home) / "tasks").iterdir()) == []  # cleaned up all the same
    # a guest command exiting 125 is the guest's business: passed on, nothing added
    guest = Stub(tmp_path / "guest", 125)
    out = home.run(agentbox, "--image", image, "microvm", "--", "false",
                   AGENTBOX_LIBKRUN_LIBRARY=str(guest.lib))  # fmt: skip
    assert (out.returncode, out.stderr) == (125, "")


def test_guest_init_override_is_copied_into_the_task_root_only(
    home: Home, agentbox: Path, image: str, tmp_path: Path
) -> None:
    stub = Stub(tmp_path / "stub", 0)
    stub.on_enter(f'#!/bin/sh\ncat "$1/usr/bin/agentbox-guest-init" > {stub.seen}\n')
    mine = tmp_path / "my-guest-init"
    mine.write_text("#!/bin/sh\necho my build\n")
    mine.chmod(0o755)
    out = home.run(agentbox, "--image", image, "microvm", "--guest-init", str(mine), "--", "true",
                   AGENTBOX_LIBKRUN_LIBRARY=str(stub.lib))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert stub.report() == ["#!/bin/sh", "echo my build"]  # the guest ran the host build
    cached = list((home.home / ".local/state/agentbox/images/sha256").glob("*/rootfs"))
    assert len(cached) == 1
    assert (cached[0] / "usr/bin/agentbox-guest-init").read_text() == "#!/bin/sh\necho guest\n"
    missing = home.run(agentbox, "--image", image, "microvm", "--guest-init", "/nonexistent")
    assert missing.returncode == 2
    assert "--guest-init /nonexistent is not a file" in missing.stderr


def lingering_run(home: Home, agentbox: Path, image: str, tmp_path: Path,
                  *flags: str) -> subprocess.Popen[bytes]:  # fmt: skip
    """`agentbox microvm` whose "VM" (the stub's on-enter) stays up; returns once it is up."""
    import time

    stub = Stub(tmp_path / "lingering", 0)
    started = tmp_path / "vm-started"
    stub.on_enter(f"#!/bin/sh\ntouch {started}\nsleep 60\n")
    run = subprocess.Popen(
        [str(agentbox), "--image", image, "microvm", *flags, "--", "true"], cwd=home.project,
        env={**home.env, "AGENTBOX_LIBKRUN_LIBRARY": str(stub.lib)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline, "the helper never reached krun_start_enter"
        assert run.poll() is None, "the run ended before its VM started"
        time.sleep(0.05)
    return run


def test_a_killed_run_is_cleaned_by_a_later_one_once_its_vm_is_gone(
    home: Home, agentbox: Path, image: str, tmp_path: Path
) -> None:
    import signal
    import time

    quick = Stub(tmp_path / "quick", 0)
    first = lingering_run(home, agentbox, image, tmp_path, "--storage", "fuse-overlay")
    try:
        first.kill()  # the command line dies; its "VM" (the helper) keeps running
        first.wait()
        tasks = state_of(home) / "tasks"
        (task,) = tasks.iterdir()
        assert (task / "rootfs-fuse-overlay").is_dir()

        def later_run() -> str:
            hour_ago = time.time() - 3600  # past the grace for tasks still being set up
            os.utime(task, (hour_ago, hour_ago))
            out = home.run(agentbox, "--image", image, "microvm", "--", "true",
                           AGENTBOX_LIBKRUN_LIBRARY=str(quick.lib))  # fmt: skip
            assert out.returncode == 0, out.stderr
            return out.stderr

        assert later_run() == ""  # the VM still holds the task: left alone
        assert task.exists()
        os.killpg(first.pid, signal.SIGKILL)  # now the VM is gone too
        time.sleep(0.2)
        assert later_run() == (f"agentbox microvm: removed 1 task root(s) left by killed runs: "
                               f"{task.name}\n")  # fmt: skip
        assert list(tasks.iterdir()) == []
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            assert str(task) not in f.read()  # its fuse-overlay is unmounted too
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)


def test_a_killed_preserve_debug_run_is_kept(home: Home, agentbox: Path, image: str,
                                             tmp_path: Path) -> None:  # fmt: skip
    import signal
    import time

    first = lingering_run(home, agentbox, image, tmp_path, "--preserve-debug")
    os.killpg(first.pid, signal.SIGKILL)  # command line and VM: nothing ran its cleanup
    first.wait()
    tasks = state_of(home) / "tasks"
    (task,) = tasks.iterdir()
    hour_ago = time.time() - 3600
    os.utime(task, (hour_ago, hour_ago))
    quick = Stub(tmp_path / "quick", 0)
    out = home.run(agentbox, "--image", image, "microvm", "--", "true",
                   AGENTBOX_LIBKRUN_LIBRARY=str(quick.lib))  # fmt: skip
    assert (out.returncode, out.stderr) == (0, "")
    assert list(tasks.iterdir()) == [task]  # --preserve-debug's task survives the collector
    subprocess.run(["sh", "-c", f"fusermount3 -u {task}/rootfs-fuse-overlay; rm -rf {task}"],
                   check=False)  # fmt: skip


def test_preserve_debug_keeps_and_explains(home: Home, agentbox: Path, image: str,
                                           tmp_path: Path) -> None:  # fmt: skip
    stub = Stub(tmp_path / "stub", 0)
    out = home.run(agentbox, "--image", image, "microvm", "--preserve-debug", "--", "true",
                   AGENTBOX_LIBKRUN_LIBRARY=str(stub.lib))  # fmt: skip
    assert out.returncode == 0, out.stderr
    tasks = state_of(home) / "tasks"
    kept = list(tasks.iterdir())
    assert len(kept) == 1
    assert (kept[0] / "launch.conf").exists()
    commands = out.stderr.split("remove it with:\n", 1)[1].splitlines()
    for line in commands:
        subprocess.run(["sh", "-c", line.strip()], check=True, capture_output=True)
    assert list(tasks.iterdir()) == []


def test_the_helper_commands_as_the_issue_names_them(home: Home, agentbox: Path, loftd: Path,
                                                    tmp_path: Path) -> None:  # fmt: skip
    """`agentbox internal krun-enter LAUNCH_CONF` and `loftd internal libkrun-enter LAUNCH_CONF`
    (with or without `--`) run the helper: the status is krun_start_enter's."""
    from agentbox_krun import launchconf
    from agentbox_krun.launchconf import LaunchConf

    stub = Stub(tmp_path / "stub", 17)
    (tmp_path / "root").mkdir()
    conf = tmp_path / "launch.conf"
    launchconf.write(LaunchConf(task_rootfs=str(tmp_path / "root"), ram_mib=512, vcpus=1,
                                workdir="/", exec_path="/init"), conf)  # fmt: skip
    lib = str(stub.lib)
    for cmd, verb in ((agentbox, "krun-enter"), (loftd, "libkrun-enter")):
        for argv in ((verb, str(conf)), (verb, "--", str(conf))):
            out = home.run(cmd, "internal", *argv, AGENTBOX_LIBKRUN_LIBRARY=lib,
                           LOFTD_LIBKRUN_LIBRARY=lib)  # fmt: skip
            assert (out.returncode, out.stderr) == (17, "")
            assert stub.calls()[-2] == "krun_start_enter 7"  # then the on-enter script
        bad = home.run(cmd, "internal", verb, AGENTBOX_LIBKRUN_LIBRARY=lib)
        assert bad.returncode == 2
        assert f"internal {verb} LAUNCH_CONF" in bad.stderr


def test_without_libkrun_nothing_is_created(home: Home, agentbox: Path, loftd: Path,
                                            tree: Callable[[Path], set[str]]) -> None:  # fmt: skip
    before = tree(home.root)
    out = home.run(agentbox, "microvm", "--", "true",
                   AGENTBOX_LIBKRUN_LIBRARY=str(home.root / "no-libkrun.so"))  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("agentbox: agentbox microvm needs libkrun: cannot load libkrun;")
    assert "install libkrun and libkrunfw" in out.stderr
    lofted = home.run(loftd, "--", "true", LOFTD_LIBKRUN_LIBRARY=str(home.root / "none.so"))
    assert lofted.returncode == 1
    assert lofted.stderr.startswith("loftd: loftd needs libkrun: cannot load libkrun;")
    assert tree(home.root) == before
    pulled = home.run(agentbox, "--pull-latest", "microvm", "--", "true")
    assert pulled.returncode == 2
    assert "--pull-latest microvm is not supported" in pulled.stderr


def run_args(cmd: Path, image: str, *command: str) -> list[str]:
    """`agentbox microvm` or `loftd` (on fuse-overlay: /tmp is no btrfs) with ``command``."""
    mode = ["microvm"] if cmd.name == "agentbox" else ["--rootfs-backend", "fuse-overlay"]
    return ["--image", image, *mode, "--", *command]


def test_the_guests_report_tells_a_vm_failure_from_the_commands_status(
    home: Home, agentbox: Path, loftd: Path, image: str, tmp_path: Path
) -> None:
    """libkrun exits with the guest's status, and with its own when the VM stopped early: only
    what the guest init reported through the task root tells them apart."""
    silent = Stub(tmp_path / "silent", 1, reports=False)  # the VM died before the guest ran
    for cmd, name, var in ((agentbox, "agentbox microvm", "AGENTBOX_LIBKRUN_LIBRARY"),
                           (loftd, "loftd", "LOFTD_LIBKRUN_LIBRARY")):  # fmt: skip
        out = home.run(
            cmd, *run_args(cmd, image, "sh", "-c", "exit 7"), extra={var: str(silent.lib)}
        )
        assert out.returncode == 1
        assert out.stderr.splitlines() == [
            f"{cmd.name}: {name}: the VM stopped before the guest started (exit 1 from libkrun)",
            "hint: libkrun's and the guest's own messages, if any, are above; rerun with --debug "
            "for more; --preserve-debug keeps the task root for a look",
        ]
        app = "agentbox" if cmd == agentbox else "loftd"
        assert list((state_of(home, app) / "tasks").iterdir()) == []  # cleaned up all the same
    # the guest said it started, then nothing: the VM stopped under the command
    started = Stub(tmp_path / "started", 143, reports="started")
    out = home.run(agentbox, "--image", image, "microvm", "--", "true",
                   AGENTBOX_LIBKRUN_LIBRARY=str(started.lib))  # fmt: skip
    assert out.returncode == 143
    assert out.stderr.splitlines()[0] == (
        "agentbox: agentbox microvm: the VM stopped while the command was running (libkrun's "
        "process was killed by SIGTERM); the command's own status is unknown"
    )
    # the guest init itself failed (exit 4), before any command
    failed = Stub(tmp_path / "failed", 4, reports="failed 4")
    out = home.run(agentbox, "--image", image, "microvm", "--", "true",
                   AGENTBOX_LIBKRUN_LIBRARY=str(failed.lib))  # fmt: skip
    assert out.returncode == 4
    assert out.stderr.splitlines() == [
        "agentbox: agentbox microvm: the guest init failed before the command ran (exit 4)",
        "hint: its own message is above; --preserve-debug keeps the task root for a look",
    ]
    # a guest that reports is honoured, whatever the number
    honest = Stub(tmp_path / "honest", 7)
    out = home.run(agentbox, "--image", image, "microvm", "--", "sh", "-c", "exit 7",
                   AGENTBOX_LIBKRUN_LIBRARY=str(honest.lib))  # fmt: skip
    assert (out.returncode, out.stderr) == (7, "")


def test_the_helper_sees_the_loader_and_libkrun_log_variables(
    home: Home, agentbox: Path, loftd: Path, image: str, tmp_path: Path
) -> None:
    """The helper is the user's VMM: LD_LIBRARY_PATH, LD_PRELOAD and RUST_LOG reach it (libkrun
    opens libkrunfw by name), other variables of the user's still do not."""
    stub = Stub(tmp_path / "stub", 0)
    stub.on_enter(f"#!/bin/sh\nenv > {stub.seen}\n")
    loader = {"LD_LIBRARY_PATH": f"{tmp_path}/lib", "LD_PRELOAD": "", "RUST_LOG": "debug",
              "SOME_SECRET": "x"}  # fmt: skip
    for cmd, var in ((agentbox, "AGENTBOX_LIBKRUN_LIBRARY"), (loftd, "LOFTD_LIBKRUN_LIBRARY")):
        out = home.run(cmd, *run_args(cmd, image, "true"), extra={**loader, var: str(stub.lib)})
        assert out.returncode == 0, out.stderr
        seen = dict(line.split("=", 1) for line in stub.report() if "=" in line)
        assert seen["LD_LIBRARY_PATH"] == f"{tmp_path}/lib"
        assert seen["RUST_LOG"] == "debug"
        assert seen[var] == str(stub.lib)
        assert "LD_PRELOAD" not in seen  # set but empty: not passed on
        assert "SOME_SECRET" not in seen


def test_the_kvm_check_before_anything_is_created(
    home: Home, agentbox: Path, loftd: Path, image: str, tmp_path: Path,
    tree: Callable[[Path], set[str]],
) -> None:  # fmt: skip
    """Without the opt-out, a host whose /dev/kvm boots no ordinary guest (this kind of machine:
    kvm-pvm) is refused at once, naming what was found; a host that can boot passes on."""
    from agentbox_krun import kvm

    stub = Stub(tmp_path / "stub", 0)
    home.extra_env = {}
    reason = kvm.problem(kvm.probe())
    for cmd, name, prefix in ((agentbox, "agentbox microvm", "AGENTBOX_"),
                              (loftd, "loftd", "LOFTD_")):  # fmt: skip
        before = tree(home.root)
        out = home.run(cmd, *run_args(cmd, image, "true"),
                       extra={f"{prefix}LIBKRUN_LIBRARY": str(stub.lib)})  # fmt: skip
        if reason is None:  # a host with hardware virtualization: the check lets it through
            assert out.returncode == 0, out.stderr
            continue
        assert out.returncode == 1
        assert out.stderr.splitlines() == [
            f"{cmd.name}: {name} cannot start a VM here: {reason}",
            f"hint: {kvm.hint(kvm.probe(), prefix + 'SKIP_KVM_CHECK')}",
        ]
        assert f"{prefix}SKIP_KVM_CHECK=1" in out.stderr
        assert tree(home.root) == before  # nothing was made: no cache, no disks, no task
        assert not stub.log.exists()


def test_a_cleanup_failure_after_a_failed_run_reports_both(
    btrfs_home: Home, agentbox: Path, image: str, tmp_path: Path
) -> None:
    home = btrfs_home
    stub = Stub(tmp_path / "stub", 1, reports=False)  # the run fails: the VM stopped early
    stub.on_enter('#!/bin/sh\nchattr +i "$1"\n')  # an immutable subvolume cannot be deleted
    out = home.run(agentbox, "--image", image, "microvm", "--storage", "btrfs-snapshot", "--",
                   "true", AGENTBOX_LIBKRUN_LIBRARY=str(stub.lib))  # fmt: skip
    (task,) = (state_of(home) / "tasks").iterdir()
    try:
        assert out.returncode == 1
        lines = out.stderr.splitlines()
        assert lines[0] == ("agentbox: agentbox microvm: the VM stopped before the guest started "
                            "(exit 1 from libkrun)")  # fmt: skip
        assert lines[1].startswith(f"agentbox microvm: cleaning up the task {task} failed: ")
        assert lines[-1].startswith("hint: libkrun's and the guest's own messages")
    finally:
        subprocess.run(["chattr", "-i", str(task / "rootfs-btrfs-snapshot")], check=True)
        subprocess.run(["btrfs", "subvolume", "delete", str(task / "rootfs-btrfs-snapshot")],
                       check=False, capture_output=True)  # fmt: skip
        shutil.rmtree(task, ignore_errors=True)


def smol_libkrun() -> Path | None:
    """The real libkrun fork in PyPI's smolmachines wheel, with its libkrunfw beside it."""
    try:
        import smol  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(smol.__file__).parent / "libkrun.so"
    return path if path.exists() and path.with_name("libkrunfw.so.5").exists() else None


def test_the_real_libkrun_through_the_whole_command_line(
    home: Home, agentbox: Path, loftd: Path, image: str, tree: Callable[[Path], set[str]]
) -> None:
    """`agentbox microvm -- true` and `loftd -- true` with the real library, its libkrunfw
    reachable only through LD_LIBRARY_PATH (as Nix and custom prefixes install it): refused at
    once by the kvm check here; with the opt-out, every setup call and krun_start_enter go
    through (libkrunfw is found by the helper), and the VM that then cannot boot on kvm-pvm is
    reported as a VM failure, not as the command's status."""
    import re
    import time

    from agentbox_krun import kvm

    lib = smol_libkrun()
    require(lib is not None, "PyPI's smolmachines (a real libkrun and libkrunfw) is missing")
    assert lib is not None
    require(Path("/usr/lib/x86_64-linux-gnu/libvirglrenderer.so.1").exists(),
            "libvirglrenderer1 is missing (apt-get install libvirglrenderer1)")  # fmt: skip
    if kvm.problem(kvm.probe()) is None:
        pytest.skip("this host boots VMs: a guest would really start here (the boot tier)")
    home.extra_env = {}
    # the wheel's libkrun uses virglrenderer without linking it (HOST-NOTES)
    env = {**home.env, "LD_LIBRARY_PATH": str(lib.parent), "LD_PRELOAD": "libvirglrenderer.so.1",
           "AGENTBOX_LIBKRUN_LIBRARY": str(lib), "LOFTD_LIBKRUN_LIBRARY": str(lib)}  # fmt: skip
    runs = {name: [str(cmd), *run_args(cmd, image, "true")]
            for name, cmd in (("agentbox microvm", agentbox), ("loftd", loftd))}  # fmt: skip
    before = tree(home.root)
    for name, argv in runs.items():
        start = time.monotonic()
        refused = subprocess.run(argv, cwd=home.project, env=env, capture_output=True,
                                 text=True, check=False, timeout=60)  # fmt: skip
        assert time.monotonic() - start < 10, "the kvm check must refuse at once"
        assert refused.returncode == 1
        assert f"{name} cannot start a VM here: /dev/kvm is served by kvm_pvm" in refused.stderr
        assert tree(home.root) == before
    # both at once: each spins for about a minute before libkrun gives up
    opted_out = {**env, **SKIP_KVM}
    procs = [subprocess.Popen(argv, cwd=home.project, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=opted_out)
             for argv in runs.values()]  # fmt: skip
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=600)
        finally:
            proc.kill()
        assert "libkrunfw" not in err, err  # the helper found it through LD_LIBRARY_PATH
        assert "libkrun helper:" not in err, err  # no setup call failed, start_enter went on
        found = re.search(r"the VM stopped before the guest started \(exit (\d+) from libkrun\)",
                          err)  # fmt: skip
        assert found is not None, err
        assert proc.returncode == int(found.group(1)) != 0


def mounted_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return [line for line in f if f" {path}/" in line]


def test_loftd_grafts_nix_and_the_workspace_with_its_contract(
    home: Home, loftd: Path, image: str, tmp_path: Path
) -> None:
    stub = Stub(tmp_path / "stub", 3)
    (home.project / "README").write_text("mine\n")
    cfg = home.config("loftd", '[task-rootfs]\nbackend = "btrfs-snapshot"\n')
    refused = home.run(loftd, "--rootfs-backend", "btrfs", "--", "true")
    assert refused.returncode == 1
    assert "say btrfs-snapshot" in refused.stderr
    out = home.run(loftd, "--image", image, "--rootfs-backend", "fuse-overlay", "--", "id",
                   LOFTD_LIBKRUN_LIBRARY=str(stub.lib))  # fmt: skip
    assert out.returncode == 3, out.stderr
    calls = stub.calls()
    state = state_of(home, "loftd")
    assert calls[:4] == ["krun_init_log 2 0 2 1", "krun_create_ctx",
                         f"krun_set_vm_config 7 {vcpus(os.cpu_count() or 1)} 4096",
                         "krun_check_nested_virt"]  # fmt: skip
    assert calls[4].startswith(f"krun_set_root 7 {state}/tasks/project-")
    assert calls[4].endswith("/rootfs-fuse-overlay")  # the flag overrode the config file
    assert calls[5] == f"krun_add_disk 7 loftd-containers {state}/loftd-containers.raw 0"
    assert not [c for c in calls if "virtiofs" in c]  # the workspace is grafted, not shared
    argv = [c.split("=", 1)[1] for c in calls if c.startswith("  argv[")]
    assert argv == ["loftd-guest-init", "enter", "--", "id"]
    env = [c.split("=", 1)[1] for c in calls if c.startswith("  env[")]
    assert "LOFTD_NIX_HOST_OVERLAY=1" in env
    assert not [e for e in env if e.startswith("AGENTBOX_")]
    seen = stub.report()
    assert "from-image" in seen  # /nix: the image's below...
    assert "workspace=mine" in seen  # ...and the project at /workspace
    assert {"nix-writable", "dir-replaced"} <= set(seen)
    upper = state / "nix-overlay" / "upper"
    assert (upper / "store" / "from-task").exists()  # ...writes land in the persistent upper
    assert mounted_under(state) == []  # the mounts lived in the helper's namespace only
    assert list((state / "tasks").iterdir()) == []
    assert cfg.exists()
    # the next task sees what the last one left in /nix
    again = home.run(loftd, "--image", image, "--rootfs-backend", "fuse-overlay", "--", "true",
                     LOFTD_LIBKRUN_LIBRARY=str(stub.lib))  # fmt: skip
    assert again.returncode == 3, again.stderr
    assert "from-task" in stub.report()


def test_loftd_refuses_a_second_task_on_the_nix_overlay(home: Home, loftd: Path, image: str,
                                                       tmp_path: Path) -> None:  # fmt: skip
    from agentbox_state.lock import FileLock

    stub = Stub(tmp_path / "stub", 0)
    state = state_of(home, "loftd")
    held = FileLock(state / "nix-overlay" / "lease", what="a test")
    held.acquire()
    try:
        out = home.run(loftd, "--image", image, "--", "true", LOFTD_LIBKRUN_LIBRARY=str(stub.lib))
    finally:
        held.release()
    assert out.returncode == 1
    assert out.stderr.startswith("loftd: loftd /nix overlay preparation failed: the /nix "
                                 f"overlay {state}/nix-overlay is in use")  # fmt: skip
    assert f"held by pid {os.getpid()}" in out.stderr
    assert not stub.log.exists()  # libkrun was never called
    assert not (state / "tasks").exists()  # stopped before any task root was made


# -- rootless -------------------------------------------------------------------------------------
@pytest.fixture
def user_tmp() -> Iterator[Path]:
    """A scratch dir the test user can reach (pytest's own are root's, 0700)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="agentbox-microvm-") as tmp:
        os.chmod(tmp, 0o755)
        yield Path(tmp)


@pytest.fixture
def user_state(user_tmp: Path, test_user: str) -> Iterator[Path]:
    """A btrfs (user_subvol_rm_allowed) for the test user's state: cache and task roots."""
    import pwd

    require_test_user()
    pw = pwd.getpwnam(test_user)
    with btrfs_loop(user_tmp / "user.img", user_tmp / "state") as mnt:
        os.chown(mnt, pw.pw_uid, pw.pw_gid)
        yield mnt


@pytest.fixture
def user_image(test_user: str) -> Iterator[str]:
    """The tiny image in the test user's own Buildah storage, also as localhost/loftd:latest
    (that storage is the test user's alone)."""
    require_test_user()
    user = ["runuser", "-u", test_user, "--", "env", "-i", f"HOME=/home/{test_user}",
            "PATH=/usr/bin:/bin"]  # fmt: skip
    subprocess.run([*user, "sh", "-c", BUILD, "build", IMAGE], check=True, capture_output=True,
                   cwd="/tmp")  # fmt: skip
    subprocess.run([*user, "buildah", "tag", IMAGE, "localhost/loftd:latest"], check=True,
                   capture_output=True, cwd="/tmp")  # fmt: skip
    yield IMAGE
    subprocess.run([*user, "buildah", "rmi", IMAGE, "localhost/loftd:latest"], check=False,
                   capture_output=True, cwd="/tmp")  # fmt: skip


def user_stub(user_tmp: Path, user: UserBox, status: int) -> Stub:
    where = user_tmp / "stub"
    stub = Stub(where, status)
    os.chown(where, user.pw.pw_uid, user.pw.pw_gid)
    return stub


def test_rootless_microvm_and_loftd(user_box: Callable[..., UserBox], user_state: Path,
                                    user_image: str, user_tmp: Path) -> None:  # fmt: skip
    box = user_box(XDG_STATE_HOME=str(user_state), **SKIP_KVM)
    (box.project / "README").write_text("mine\n")
    stub = user_stub(user_tmp, box, 7)
    lib = {"AGENTBOX_LIBKRUN_LIBRARY": str(stub.lib)}
    out = box.run("--image", user_image, "--profile", "--debug", "microvm", "--", "true", **lib)
    assert out.returncode == 7, out.stderr
    assert "+ buildah --log-level=debug unshare " in out.stderr  # --debug reaches Buildah
    assert profile_rows(out.stderr)["storage_mode"] == "btrfs-snapshot"
    seen = stub.report()
    # the helper runs as the user; the snapshot was made in the user namespace, where the
    # image's root is the user: so the user owns what the guest sees as root's
    assert seen[:3] == [f"uid={box.pw.pw_uid}", "root-inode=256", "guest-init=ok"]
    assert "from-image" in seen
    assert list((box.state_dir / "tasks").iterdir()) == []
    stub.calls()
    # no --image: loftd finds localhost/loftd:latest in the user's storage (--pull=never)
    lofted = box.run("--profile", "--debug", "--", "true", module="loftd",
                     LOFTD_LIBKRUN_LIBRARY=str(stub.lib))  # fmt: skip
    assert lofted.returncode == 7, lofted.stderr
    assert profile_rows(lofted.stderr)["image"] == "localhost/loftd:latest"
    seen = stub.report()
    # loftd's helper runs inside `buildah unshare` (root there) to mount /nix and the workspace
    assert seen[0] == "uid=0"
    assert {"root-inode=256", "from-image", "workspace=mine", "nix-writable",
            "dir-replaced"} <= set(seen)  # the overlay in a user namespace: userxattr  # fmt: skip
    upper = box.loftd_state_dir / "nix-overlay" / "upper" / "store" / "from-task"
    assert upper.stat().st_uid == box.pw.pw_uid  # the persistent /nix is the user's on the host
    # the workspace grafted is the real project: what the "guest" (the stub's script, with the
    # helper's identity: root in the user namespace) writes there is the user's on the host
    made = box.project / "made-by-guest"
    assert (made.stat().st_uid, made.stat().st_gid) == (box.pw.pw_uid, box.pw.pw_gid)
    assert list((box.loftd_state_dir / "tasks").iterdir()) == []
    calls = stub.calls()
    assert calls[0] == "krun_init_log 2 0 2 1"
    # root inside, which is the user outside: the guest's shell is root (it owns /workspace)
    assert "LOFTD_ENTER_AS_ROOT=1" in [c.split("=", 1)[1] for c in calls if c.startswith("  env[")]
    assert f"krun_add_disk 7 loftd-containers {box.loftd_state_dir}/loftd-containers.raw 0" in calls
    # the same on a fuse-overlay task root (fuse-overlayfs runs as the user, outside the user
    # namespace; the helper inside it still reaches the mount and grafts onto it)
    fused = box.run("--rootfs-backend", "fuse-overlay", "--", "true", module="loftd",
                    LOFTD_LIBKRUN_LIBRARY=str(stub.lib))  # fmt: skip
    assert fused.returncode == 7, fused.stderr
    seen = stub.report()
    assert seen[1] != "root-inode=256"  # not a snapshot this time
    assert {"from-task", "workspace=mine", "nix-writable"} <= set(seen)  # /nix persisted
    assert stub.calls()[4].endswith("/rootfs-fuse-overlay")
    assert list((box.loftd_state_dir / "tasks").iterdir()) == []


def test_dry_run_prints_the_whole_plan_and_creates_nothing(
    home: Home, agentbox: Path, loftd: Path, image: str, tmp_path: Path,
    tree: Callable[[Path], set[str]],
) -> None:  # fmt: skip
    """Facts are read (libkrun, the image's digest, the cache), the plan is printed, and nothing
    is made: no cache entry, no disk, no task, no libkrun call."""
    stub = Stub(tmp_path / "stub", 0)
    lib = str(stub.lib)
    for cmd, name, var in ((agentbox, "agentbox microvm", "AGENTBOX_LIBKRUN_LIBRARY"),
                           (loftd, "loftd", "LOFTD_LIBKRUN_LIBRARY")):  # fmt: skip
        before = tree(home.root)
        out = home.run(cmd, "--dry-run", *run_args(cmd, image, "echo", "hi"), extra={var: lib})
        assert (out.returncode, out.stderr) == (0, ""), out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].startswith(f"{name}: task project-")
        assert lines[0].endswith(f", image {image}")
        assert lines[1] == f"kvm: not checked ({var.split('_')[0]}_SKIP_KVM_CHECK=1)"
        assert lines[2].startswith("image cache: miss: ")  # a fresh home: it would ingest
        assert f" -m loftd.ingest {image} " in lines[2]
        helper = [line for line in lines if line.startswith("helper: ")]
        assert len(helper) == 1
        assert f"{var}={lib} " in helper[0]
        assert f" -m agentbox_krun.enter {var} " in helper[0]
        assert helper[0].endswith("/launch.conf")
        # launch.conf as the helper would read it, between its path and the helper's line
        (start,) = [i for i, line in enumerate(lines) if "/launch.conf (the task root" in line]
        conf = json.loads("\n".join(lines[start + 1 : lines.index(helper[0])]))
        guest = ["agentbox-guest-init", "microvm"] if cmd == agentbox else ["loftd-guest-init"]
        assert conf["argv"] == [*guest, "enter", "--", "echo", "hi"]
        assert tree(home.root) == before
        assert not stub.log.exists()


def test_an_agent_gets_its_worktree_and_the_git_dir_over_virtiofs(
    home: Home, agentbox: Path, image: str, tmp_path: Path
) -> None:
    """--agent with microvm, through the whole command line and the stub libkrun: the
    agent's worktree is the workspace share, the repository's git dir and what a commit
    writes are further virtiofs shares (tags after the workspace's), and the guest init is
    told where each goes (AGENTBOX_MICROVM_SHARES: read-only first, then the writable ones
    inside it); the agent's disks are its own."""
    require(shutil.which("git") is not None, "git is missing (apt-get install git)")
    git = ["git", "-C", str(home.project), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "--quiet", "--initial-branch=main"], check=True)
    subprocess.run([*git, "commit", "--quiet", "--allow-empty", "-m", "first"], check=True)
    stub = Stub(tmp_path / "stub", 0)
    out = home.run(agentbox, "--image", image, "--agent", "a1", "microvm", "--", "true",
                   AGENTBOX_LIBKRUN_LIBRARY=str(stub.lib))  # fmt: skip
    assert out.returncode == 0, out.stderr
    agent = state_of(home).parent / f"{state_of(home).name}-agent-a1"
    dot_git = f"{home.project}/.git"
    calls = stub.calls()
    # libkrun.h: krun_add_virtiofs3(ctx, tag, path, shm_size, read_only): the git dir is
    # read-only for libkrun itself, not only for the guest's mount
    shared = [c.split()[2:4] + c.split()[5:] for c in calls if c.startswith("krun_add_virtiofs")]
    assert shared == [
        ["agentbox-workspace", f"{agent}/worktree", "0"],
        ["agentbox-workspace-1", dot_git, "1"],
        ["agentbox-workspace-2", f"{dot_git}/objects", "0"],
        ["agentbox-workspace-3", f"{dot_git}/refs/heads/agentbox", "0"],
        ["agentbox-workspace-4", f"{dot_git}/logs/refs/heads/agentbox", "0"],
        ["agentbox-workspace-5", f"{dot_git}/worktrees/worktree", "0"],
    ]
    env = [c.split("=", 1)[1] for c in calls if c.startswith("  env[")]
    [announced] = [e for e in env if e.startswith("AGENTBOX_MICROVM_SHARES=")]
    told = json.loads(announced.split("=", 1)[1])
    assert [(tag, readonly) for tag, _, readonly in told] == [
        ("agentbox-workspace-1", True),
        *((f"agentbox-workspace-{i}", False) for i in (2, 3, 4, 5)),
    ]
    assert [target for _, target, _ in told] == [s[1] for s in shared[1:]]  # at their own paths
    assert f"krun_add_disk 7 agentbox-nix {agent}/microvm-nix.raw 0" in calls
    branch = subprocess.run([*git, "rev-parse", "--verify", "agentbox/a1"], capture_output=True,
                            check=False)  # fmt: skip
    assert branch.returncode == 0
