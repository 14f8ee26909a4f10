"""`agentbox container` end to end as an ordinary user: rootless Podman, keep-id, the Nix
sidecar and its lifecycle. Uses the image the guest tests load into the user's storage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import UserBox


@pytest.fixture
def box(user_image: str, user_box: Callable[..., UserBox]) -> Iterator[UserBox]:
    b = user_box()
    yield b
    # whatever a test left: removed the way the idle reaper removes it
    b.run("internal", "sidecar-reap", "--", str(b.state_dir), "localhost/agentbox:latest", "0")


def test_command_as_the_user_with_nix_and_nothing_left(box: UserBox) -> None:
    script = "id -u; pwd; touch /workspace/made-inside; " \
        "nix --extra-experimental-features nix-command store ping 2>&1 | head -1"  # fmt: skip
    done = box.run("container", "--", "sh", "-c", script, AGENTBOX_SIDECAR_IDLE_GRACE="0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        str(box.pw.pw_uid), "/workspace", "Store URL: unix:///nix/var/nix/daemon-socket/socket",
    ]  # fmt: skip
    made = box.project / "made-inside"
    assert (made.stat().st_uid, made.stat().st_gid) == (box.pw.pw_uid, box.pw.pw_gid)
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}


def test_exit_status_and_store_persistence(box: UserBox) -> None:
    add = box.run("container", "--", "sh", "-c", "echo hi > /tmp/x && nix-store --add /tmp/x",
                  AGENTBOX_SIDECAR_IDLE_GRACE="0")  # fmt: skip
    assert add.returncode == 0, add.stderr
    path = add.stdout.strip()
    again = box.run("container", "--", "cat", path, AGENTBOX_SIDECAR_IDLE_GRACE="0")
    assert (again.returncode, again.stdout) == (0, "hi\n"), again.stderr
    assert box.run("container", "--", "sh", "-c", "exit 9").returncode == 9


def test_idle_grace_keeps_then_removes_the_sidecar(box: UserBox) -> None:
    first = box.run("container", "--", "true", AGENTBOX_SIDECAR_IDLE_GRACE="3")
    assert first.returncode == 0, first.stderr
    names = box.leftovers()["containers"]
    assert isinstance(names, list)
    assert [n for n in names if n.startswith("agentbox-nix-")]
    second = box.run("container", "--", "true", AGENTBOX_SIDECAR_IDLE_GRACE="3")
    assert second.returncode == 0, second.stderr
    clean = {"containers": [], "fuse_mounts": 0}
    deadline = time.monotonic() + 30
    # the reaper removes the sidecar, then unmounts its overlay: wait for both, not the first
    while time.monotonic() < deadline and box.leftovers() != clean:
        time.sleep(0.5)
    assert box.leftovers() == clean


def test_two_at_once_share_one_sidecar(box: UserBox) -> None:
    procs = [subprocess.Popen(box.argv("container", "--", "sh", "-c",
                                       "sleep 2; nix-store --store daemon --version >/dev/null",
                                       AGENTBOX_SIDECAR_IDLE_GRACE="0"),
                              cwd=box.project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL) for _ in range(2)]  # fmt: skip
    time.sleep(1.5)
    sidecars = [n for n in box.podman("ps", "--format", "{{.Names}}").split()
                if n.startswith("agentbox-nix-")]  # fmt: skip
    for proc in procs:
        with proc:
            _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert len(sidecars) == 1
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}


def test_a_killed_run_is_cleaned_by_the_next(box: UserBox) -> None:
    proc = subprocess.Popen(box.argv("container", "--", "sleep", "3",
                                     AGENTBOX_SIDECAR_IDLE_GRACE="0"),
                            cwd=box.project, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)  # agentbox and its podman run: a crash
    proc.wait()
    next_run = box.run("container", "--", "true", AGENTBOX_SIDECAR_IDLE_GRACE="0")
    assert next_run.returncode == 0, next_run.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and box.leftovers() != {"containers": [], "fuse_mounts": 0}:
        time.sleep(0.5)
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}


def test_sidecar_action_and_dry_run(box: UserBox) -> None:
    dry = box.run("container", "--dry-run", "--", "true")
    assert dry.returncode == 0, dry.stderr
    assert "podman run --rm --interactive --name my-project-" in dry.stdout
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}
    started = box.run("container", "sidecar")
    assert started.returncode == 0, started.stderr
    name = started.stdout.strip()
    assert name.startswith("agentbox-nix-my-project-")
    assert box.leftovers()["containers"] == [name]
    state = json.dumps(box.podman("inspect", "--format", "{{.State.Running}}", name).strip())
    assert state == '"true"'


def test_sigterm_reaches_the_task_and_cleans_up(box: UserBox) -> None:
    marker = f"sigterm-{os.getpid()}"
    proc = subprocess.Popen(box.argv("container", "--", "sh", "-c", f"sleep 30; : {marker}",
                                     AGENTBOX_SIDECAR_IDLE_GRACE="0"),
                            cwd=box.project, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    agentbox_pid = None
    while time.monotonic() < deadline and agentbox_pid is None:
        pgrep = ["pgrep", "-u", box.user, "-f", f"agentbox_cli container.*{marker}"]
        found = subprocess.run(pgrep, capture_output=True, text=True, check=False).stdout.split()
        running = box.podman("ps", "--format", "{{.Names}}").split()
        if found and any(n.startswith("my-project-") for n in running):
            agentbox_pid = int(found[0])
        time.sleep(0.2)
    assert agentbox_pid is not None, "the task never started"
    os.kill(agentbox_pid, signal.SIGTERM)
    with proc:
        proc.communicate(timeout=120)
    assert proc.returncode != 0  # the task was stopped, not finished
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and box.leftovers() != {"containers": [], "fuse_mounts": 0}:
        time.sleep(0.5)
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}


def test_profile_and_debug_print_the_guest_report_and_debug_reaches_podman(box: UserBox) -> None:
    import re

    done = box.run("--profile", "--debug", "container", "--", "true",
                   AGENTBOX_SIDECAR_IDLE_GRACE="0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    # the guest init's own report (see test_guest_container), through podman's stderr
    assert lines.count("agentbox-guest-init profile: container enter") == 1, done.stderr
    start = lines.index("agentbox-guest-init profile: container enter")
    report = [line for line in lines[start + 1 :] if re.fullmatch(r"  [a-z-]+: [0-9.]+ms", line)]
    assert report[0].startswith("  resolve-identity: "), done.stderr
    assert [r for r in report if r.startswith("  total: ")], done.stderr
    # every podman command agentbox ran (echoed as "+ ...") and every one inside its
    # `podman unshare sh -c` scripts has podman's own --log-level=debug; podman logged at debug
    echoed = [line for line in lines if line.startswith("+ ")]
    podman_words = [m.group(1) for line in echoed
                    for m in re.finditer(r"\bpodman (\S+)", line)]  # fmt: skip
    assert len(podman_words) >= 6, echoed  # rm, unshare x2 (+ mount inside), run, inspect, ...
    assert set(podman_words) == {"--log-level=debug"}, echoed
    assert any("level=debug" in line for line in lines), done.stderr
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}


def test_profile_or_debug_alone_prints_no_guest_report(box: UserBox) -> None:
    for flag in ("--profile", "--debug"):
        done = box.run(flag, "container", "--", "true", AGENTBOX_SIDECAR_IDLE_GRACE="0")
        assert done.returncode == 0, done.stderr
        assert "agentbox-guest-init profile:" not in done.stderr, (flag, done.stderr)
