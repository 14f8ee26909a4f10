"""`agentbox container` end to end as an ordinary user: rootless Podman, keep-id, the Nix
sidecar and its lifecycle. Uses the image the guest tests load into the user's storage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

pytestmark = [pytest.mark.root, pytest.mark.podman, pytest.mark.image]

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


def build_image(box: UserBox, tag: str, containerfile: str, **files: str) -> str:
    """``podman build`` as the test user from a throw-away context; removed by ``drop_image``."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="agentbox-ctx-") as tmp:
        os.chmod(tmp, 0o755)
        ctx = Path(tmp)
        (ctx / "Containerfile").write_text(containerfile)
        for name, text in files.items():
            (ctx / name).write_text(text)
            (ctx / name).chmod(0o755)
        box.podman("build", "--quiet", "--tag", tag, "--file", str(ctx / "Containerfile"), tmp)
    return tag


def drop_image(box: UserBox, tag: str) -> None:
    box.run("internal", "sidecar-reap", "--", str(box.state_dir), tag, "0")
    subprocess.run(["runuser", "-u", box.user, "--", *box.env(), "podman", "rmi", "--force",
                    tag], capture_output=True, check=False, cwd="/tmp")  # fmt: skip


def test_root_inside_is_the_host_user_and_dev_owns_its_files_too(box: UserBox) -> None:
    done = box.run("--root", "container", "--", "sh", "-c", "id -u; touch /workspace/by-root",
                   AGENTBOX_SIDECAR_IDLE_GRACE="0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0"
    made = box.project / "by-root"
    assert (made.stat().st_uid, made.stat().st_gid) == (box.pw.pw_uid, box.pw.pw_gid)
    dev = box.run("container", "--", "touch", "/workspace/by-dev", AGENTBOX_SIDECAR_IDLE_GRACE="0")
    assert dev.returncode == 0, dev.stderr
    mine = box.project / "by-dev"
    assert (mine.stat().st_uid, mine.stat().st_gid) == (box.pw.pw_uid, box.pw.pw_gid)


def test_a_rebuilt_image_replaces_the_sidecar_after_its_running_task(box: UserBox) -> None:
    tag = "localhost/agentbox-rebuilt-test:1"
    base = "FROM localhost/agentbox:latest\n"
    build_image(box, tag, base + "COPY marker /etc/agentbox-old\n", marker="old\n")
    try:
        first = subprocess.Popen(box.argv("--image", tag, "container", "--", "sh", "-c",
                                          "sleep 6; nix-store --version >/dev/null",
                                          AGENTBOX_SIDECAR_IDLE_GRACE="0"),
                                 cwd=box.project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, stdin=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        mine = ["ps", "--filter", f"label=agentbox.workspace={box.key}", "--filter",
                "label=agentbox.role=task", "--format", "{{.Names}}"]  # fmt: skip
        while time.monotonic() < deadline and not box.podman(*mine).split():
            time.sleep(0.2)
        # the image is rebuilt under the same tag, with something new in its /nix
        build_image(box, tag, base + "COPY marker /nix/agentbox-marker\n", marker="new\n")
        second = box.run("--image", tag, "container", "--", "cat", "/nix/agentbox-marker",
                         AGENTBOX_SIDECAR_IDLE_GRACE="0")  # fmt: skip
        with first:
            _, first_err = first.communicate(timeout=120)
        assert first.returncode == 0, first_err  # its sidecar stayed under it
        assert (second.returncode, second.stdout) == (0, "new\n"), second.stderr
        assert "waiting for the project's running tasks to end, then replacing it" in \
            second.stderr  # fmt: skip
    finally:
        drop_image(box, tag)


def test_the_sidecar_action_prints_its_socket_and_does_not_wait(box: UserBox) -> None:
    tag = "localhost/agentbox-no-daemon-test:1"
    script = "#!/bin/sh\ntrap 'exit 0' TERM\nsleep 600 & wait\n"
    build_image(box, tag, "FROM localhost/agentbox:latest\n"
                "COPY nix-sidecar /usr/libexec/agentbox/nix-sidecar\n",
                **{"nix-sidecar": script})  # fmt: skip
    try:
        started = box.run("--image", tag, "container", "sidecar")
        assert started.returncode == 0, started.stderr
        name, socket = started.stdout.splitlines()
        assert name.startswith("agentbox-nix-my-project-")
        assert socket == f"{box.state_dir}/nix/merged/var/nix/daemon-socket/socket"
        assert "inside `podman unshare`" in started.stderr
        assert f"podman logs {name}" in started.stderr
        assert box.leftovers()["containers"] == [name]
        ls = ["runuser", "-u", box.user, "--", *box.env(), "podman", "unshare", "test", "-S",
              socket]  # fmt: skip
        assert subprocess.run(ls, cwd="/tmp", check=False).returncode == 1  # no daemon: no socket
        # started alongside a new sidecar (the last one reaped), a task's first use of Nix
        # waits for that daemon, bounded, and says why it gave up
        box.run("internal", "sidecar-reap", "--", str(box.state_dir), tag, "0")
        assert box.leftovers() == {"containers": [], "fuse_mounts": 0}
        begun = time.monotonic()
        nix = box.run(
            "--image",
            tag,
            "container",
            "--",
            "sh",
            "-c",
            "echo before; nix-store --version",
            AGENTBOX_SIDECAR_IDLE_GRACE="0",
        )
        assert nix.returncode != 0
        assert nix.stdout == "before\n"
        assert "agentbox: the Nix daemon did not open /nix/var/nix/daemon-socket/socket within " \
            "10 s, so nix-store cannot run" in nix.stderr, nix.stderr  # fmt: skip
        # bounded (10 s; exact in the guest init's unit tests), plus a run and a teardown on a
        # host that may be busy
        assert time.monotonic() - begun < 150
    finally:
        drop_image(box, tag)


def test_a_cold_start_puts_the_nix_waiters_first_on_path_a_warm_one_does_not(
    box: UserBox,
) -> None:
    show = ["sh", "-c", "echo $PATH; env | grep -c '^AGENTBOX_' || true; readlink "
            "$(command -v nix-store)"]  # fmt: skip
    # the sleep outlasts container.plan.SIDECAR_DEFER_SECONDS: the sidecar starts, the next is warm
    cold = box.run("container", "--", *show[:2], show[2] + "; sleep 1",
                   AGENTBOX_SIDECAR_IDLE_GRACE="30")  # fmt: skip
    assert cold.returncode == 0, cold.stderr
    path, count, link = cold.stdout.splitlines()
    assert path.startswith("/run/agentbox/nix-wait/bin:"), path
    assert (count, link) == ("0", "../wait-for-daemon")
    warm = box.run("container", "--", *show[:2], "echo $PATH; nix-store --version",
                   AGENTBOX_SIDECAR_IDLE_GRACE="0")  # fmt: skip
    assert warm.returncode == 0, warm.stderr
    assert "/run/agentbox/nix-wait" not in warm.stdout.splitlines()[0]
    assert "nix-store (Nix)" in warm.stdout


def test_without_fuse_overlayfs_nothing_starts(box: UserBox) -> None:
    import tempfile
    from pathlib import Path

    bin_dir = Path(tempfile.mkdtemp(prefix="agentbox-no-fuse-overlayfs-"))
    os.chmod(bin_dir, 0o755)
    for tool in Path("/usr/bin").iterdir():
        if tool.name != "fuse-overlayfs":
            (bin_dir / tool.name).symlink_to(tool)
    done = box.run("container", "--", "true", PATH=str(bin_dir))
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "agentbox: container mode needs fuse-overlayfs for the project's /nix overlay, and it "
        "is not installed (or not on PATH)",
        "hint: install it: apt-get install fuse-overlayfs (Debian/Ubuntu)",
    ]
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}
    assert not (box.state_dir / "nix").exists()
    assert not (box.state_dir / "nix-sidecar.state").exists()
    import shutil

    shutil.rmtree(bin_dir)


@pytest.mark.parametrize("image", ["localhost/nosuch:1", "docker.io/library/debian:12"])
def test_a_missing_image_is_pulled_and_said_in_one_line(box: UserBox, image: str) -> None:
    done = box.run("--image", image, "container", "--", "true")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith(f"agentbox: image {image} is not in local storage, and pulling "
                               "it failed: "), done.stderr  # fmt: skip
    assert lines[1].startswith("hint: ")
    assert "podman load" in lines[1]
    assert "podman unshare" not in done.stderr
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}


def test_an_image_without_nix_or_guest_init_is_refused_before_anything_runs(
    box: UserBox,
) -> None:
    tag = "localhost/agentbox-bare-test:1"
    build_image(box, tag, "FROM scratch\nCOPY os-release /etc/os-release\n",
                **{"os-release": "ID=bare\n"})  # fmt: skip
    try:
        done = box.run("--image", tag, "container", "--", "true")
        assert done.returncode == 1
        lines = done.stderr.splitlines()
        assert lines[0].startswith(f"agentbox: image {tag} ("), done.stderr
        assert lines[0].endswith(
            "cannot run in container mode: it has no /nix (the Nix store the sidecar serves); "
            "no guest init (/usr/bin/agentbox-guest-init); no Nix sidecar entry point "
            "(/usr/libexec/agentbox/nix-sidecar); its entry point is not the guest init (it is "
            "none)"
        ), done.stderr
        assert "agentbox image build" in lines[1]
        assert "cannot read lower dirs" not in done.stderr
        assert box.leftovers() == {"containers": [], "fuse_mounts": 0}
    finally:
        drop_image(box, tag)


def test_command_as_the_user_with_nix_and_nothing_left(box: UserBox) -> None:
    script = "id -u; pwd; touch /workspace/made-inside; " \
        "nix --extra-experimental-features nix-command store info 2>&1 | head -1"  # fmt: skip
    done = box.run("container", "--", "sh", "-c", script, AGENTBOX_SIDECAR_IDLE_GRACE="0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        str(box.pw.pw_uid), "/workspace", "Store URL: daemon",  # Nix 2.26's name for the daemon
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
    # a task that runs longer than container.plan.SIDECAR_DEFER_SECONDS starts the sidecar
    first = box.run("container", "--", "sleep", "1", AGENTBOX_SIDECAR_IDLE_GRACE="3")
    assert first.returncode == 0, first.stderr
    names = box.leftovers()["containers"]
    assert isinstance(names, list)
    assert [n for n in names if n.startswith("agentbox-nix-")]
    second = box.run("container", "--", "true", AGENTBOX_SIDECAR_IDLE_GRACE="3")
    assert second.returncode == 0, second.stderr
    # after the grace the reaper removes the sidecar's container; its overlay stays mounted
    # (plan.OVERLAY_IDLE_SECONDS after the last task) for the next start
    idle = {"containers": [], "fuse_mounts": 1}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and box.leftovers() != idle:
        time.sleep(0.5)
    assert box.leftovers() == idle
    # its reaper unmounts it once that time is over, as a reap with no grace does now
    reap = box.run("internal", "sidecar-reap", "--", str(box.state_dir),
                   "localhost/agentbox:latest", "0")  # fmt: skip
    assert reap.returncode == 0, reap.stderr
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}


def test_two_at_once_share_one_sidecar(box: UserBox) -> None:
    procs = [subprocess.Popen(box.argv("container", "--", "sh", "-c",
                                       "sleep 2; nix-store --store daemon --version >/dev/null",
                                       AGENTBOX_SIDECAR_IDLE_GRACE="0"),
                              cwd=box.project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL) for _ in range(2)]  # fmt: skip
    seen: set[str] = set()  # the sidecars running at any moment while the two run
    counts: list[int] = []
    while any(proc.poll() is None for proc in procs):
        now = [
            n
            for n in box.podman("ps", "--format", "{{.Names}}").split()
            if n == f"agentbox-nix-{box.key}"
        ]  # this project's (others run tests too)
        seen.update(now)
        counts.append(len(now))
        time.sleep(0.2)
    for proc in procs:
        with proc:
            _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    sidecars = sorted(seen)
    assert max(counts) == 1
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


def test_after_a_crash_took_every_process_of_the_user_the_remedy_is_named(box: UserBox) -> None:
    """A killed session (or an OOM kill of Podman's pause process) ends every process of the
    user while Podman's record of its pause process and running sidecar stays in /tmp: podman
    then refuses everything until `podman system migrate`. agentbox names that remedy, and after
    it the next run works, its stale sidecar replaced."""
    first = box.run("container", "--", "sleep", "1")  # its sidecar stays for the idle grace
    assert first.returncode == 0, first.stderr
    assert box.leftovers()["containers"], "the sidecar runs on"
    subprocess.run(["pkill", "--signal", "KILL", "-u", box.user], check=False)
    deadline = time.monotonic() + 30
    while (
        time.monotonic() < deadline
        and subprocess.run(["pgrep", "-u", box.user], capture_output=True).returncode == 0
    ):
        time.sleep(0.2)  # fmt: skip
    crashed = box.run("container", "--", "true", AGENTBOX_SIDECAR_IDLE_GRACE="0")
    assert crashed.returncode != 0
    assert "hint: Podman's rootless state names processes that are gone: run `podman system " \
        "migrate`" in crashed.stderr, crashed.stderr  # fmt: skip
    box.podman("system", "migrate")
    again = box.run("container", "--", "true", AGENTBOX_SIDECAR_IDLE_GRACE="0")
    assert again.returncode == 0, again.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and box.leftovers() != {"containers": [], "fuse_mounts": 0}:
        time.sleep(0.5)
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}


def test_after_the_idle_grace_the_overlay_stays_so_the_next_start_mounts_nothing(
    box: UserBox,
) -> None:
    """A task that ends before plan.SIDECAR_DEFER_SECONDS starts no sidecar container and keeps
    its /nix overlay mounted (as the idle reaper does, plan.OVERLAY_IDLE_SECONDS): the next cold
    start runs no `podman unshare`, its new daemon serves the task, and a grace of 0 then
    removes everything."""
    first = box.run("container", "--", "true", AGENTBOX_SIDECAR_IDLE_GRACE="1")
    assert first.returncode == 0, first.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and box.leftovers() != {"containers": [], "fuse_mounts": 1}:
        time.sleep(0.3)
    assert box.leftovers() == {"containers": [], "fuse_mounts": 1}
    state = json.loads((box.state_dir / "nix-sidecar.state").read_text())
    assert state["retired"]
    assert (state.get("conmon_pid", ""), state.get("container_id", "")) == ("", "")
    cold = box.run("--debug", "container", "--", "sh", "-c", "nix store info 2>&1 | head -1",
                   AGENTBOX_SIDECAR_IDLE_GRACE="0")  # fmt: skip
    assert cold.returncode == 0, cold.stderr
    assert cold.stdout == "Store URL: daemon\n", cold.stderr
    commands = [line for line in cold.stderr.splitlines() if line.startswith("+ ")]
    task = next(i for i, c in enumerate(commands) if " run --rm --interactive " in c)
    before = commands[: task + 2]  # the sidecar's start follows the task's
    assert [c for c in before if " unshare " in c] == [], before
    assert [c for c in before if " run --detach --name agentbox-nix-" in c], before
    assert " unshare sh -c 'if grep" in commands[-1]  # the grace of 0: unmounted at the end
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}


def test_sidecar_action_and_dry_run(box: UserBox) -> None:
    dry = box.run("container", "--dry-run", "--", "true")
    assert dry.returncode == 0, dry.stderr
    assert "podman run --rm --interactive --name my-project-" in dry.stdout
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}
    started = box.run("container", "sidecar")
    assert started.returncode == 0, started.stderr
    name = started.stdout.splitlines()[0]
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

    # the sleep outlasts container.plan.SIDECAR_DEFER_SECONDS, so the sidecar's start is seen too
    done = box.run("--profile", "--debug", "container", "--", "sleep", "1",
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


def test_the_home_directory_is_no_workspace_unless_allowed_and_never_with_the_state(
    box: UserBox,
) -> None:
    """`cd ~ && agentbox container` would hand the agent ~/.ssh: refused, naming --allow-home;
    with it, still refused while agentbox's own state lies inside; with the state elsewhere,
    the plan mounts the home at /workspace."""
    home = box.pw.pw_dir

    def from_home(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(box.argv(*args, **env), cwd=home, capture_output=True, text=True,
                              check=False, timeout=120)  # fmt: skip

    refused = from_home("--dry-run", "container")
    assert refused.returncode == 1
    assert refused.stderr == (
        f"agentbox: refusing the workspace {home}: it is your home directory, and the sandbox "
        "would see all of it (~/.ssh, credentials, browser profiles)\n"
        "hint: cd into the project's own directory, or pass --allow-home to share it anyway\n"
    )
    state = f"{home}/.local/state/agentbox"
    inside = from_home("--allow-home", "--dry-run", "container")
    assert (inside.returncode, inside.stdout) == (1, "")
    assert f"it contains the agentbox state {state}, which no sandbox may see" in inside.stderr
    with tempfile.TemporaryDirectory(prefix="agentbox-state-") as elsewhere:
        os.chown(elsewhere, box.pw.pw_uid, box.pw.pw_gid)
        shared = from_home("--allow-home", "--dry-run", "container", XDG_STATE_HOME=elsewhere)
        assert shared.returncode == 0, shared.stderr
        assert f"--volume {home}:/workspace " in shared.stdout
    assert box.leftovers() == {"containers": [], "fuse_mounts": 0}
