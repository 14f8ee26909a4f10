"""The agentbox image built by `agentbox image build`, run the way container mode runs it: rootless
podman as an ordinary user, --userns keep-id, root inside the container with the host contract.

The first run on a fresh machine builds the image (a few minutes); later runs reuse every stage.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.podman, pytest.mark.image]

IMAGE = "localhost/agentbox:latest"


RunAs = Callable[..., subprocess.CompletedProcess[str]]
as_user: RunAs  # set by the autouse fixture below: conftest's helper


@pytest.fixture(autouse=True)
def _as_user(run_as: RunAs) -> None:
    global as_user
    as_user = run_as


@pytest.fixture
def workspace(user_image: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="agentbox-ws-") as tmp:
        ws = Path(tmp) / "project"
        ws.mkdir()
        user = pwd.getpwnam(user_image)
        os.chown(ws, user.pw_uid, user.pw_gid)
        os.chmod(tmp, 0o755)
        yield ws


def run_box(user: str, ws: Path, *cmd: str, env: dict[str, str] | None = None,
            contract: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    pw = pwd.getpwnam(user)
    contract_env = {"AGENTBOX_HOST_UID": str(pw.pw_uid), "AGENTBOX_HOST_GID": str(pw.pw_gid)}
    envs = [
        f"--env={k}={v}" for k, v in {**(contract_env if contract else {}), **(env or {})}.items()
    ]
    return as_user(user, "podman", "run", "--rm", "--userns=keep-id", "--user=0:0",
                   f"--volume={ws}:/workspace", "--workdir=/workspace", *envs, IMAGE, *cmd,
                   cwd=str(ws))  # fmt: skip


def test_shell_as_dev_with_the_host_uid_and_an_owned_workspace(
    user_image: str, workspace: Path
) -> None:
    pw = pwd.getpwnam(user_image)
    script = 'id -u; id -un; id -g; echo "$HOME"; echo "$USER"; pwd; touch /workspace/made-inside'
    done = run_box(user_image, workspace, "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        str(pw.pw_uid), "dev", str(pw.pw_gid), "/home/dev", "dev", "/workspace",
    ]  # fmt: skip
    assert done.stderr == "", "stdout and stderr stay clean for the user's command"
    made = workspace / "made-inside"
    assert (made.stat().st_uid, made.stat().st_gid) == (pw.pw_uid, pw.pw_gid)


def test_enter_as_root(user_image: str, workspace: Path) -> None:
    done = run_box(user_image, workspace, "sh", "-c", "id -u; echo $HOME",
                   env={"AGENTBOX_ENTER_AS_ROOT": "1"})  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "0\n/root\n"), done.stderr


def test_exit_status_and_missing_contract(user_image: str, workspace: Path) -> None:
    assert run_box(user_image, workspace, "sh", "-c", "exit 7").returncode == 7
    missing = run_box(user_image, workspace, "true", contract=False)
    assert missing.returncode == 3
    assert missing.stderr == (
        "agentbox-guest-init: AGENTBOX_HOST_UID and AGENTBOX_HOST_GID are required when the "
        "guest init starts as root\n"
    )
    bad = run_box(user_image, workspace, "true", env={"AGENTBOX_ENTER_AS_ROOT": "yes"})
    assert (bad.returncode, bad.stderr) == (
        3, "agentbox-guest-init: AGENTBOX_ENTER_AS_ROOT='yes' is not 1 or 0\n",
    )  # fmt: skip
    absent = run_box(user_image, workspace, "no-such-command")
    assert (absent.returncode, absent.stderr) == (
        127, "agentbox-guest-init: no-such-command: command not found\n",
    )  # fmt: skip


def test_profile_report_only_with_profile_and_debug(user_image: str, workspace: Path) -> None:
    quiet = run_box(user_image, workspace, "true", env={"AGENTBOX_GUEST_PROFILE": "1"})
    assert (quiet.returncode, quiet.stderr) == (0, "")
    loud = run_box(user_image, workspace, "true",
                   env={"AGENTBOX_GUEST_PROFILE": "1", "AGENTBOX_GUEST_DEBUG": "1"})  # fmt: skip
    lines = loud.stderr.splitlines()
    assert lines[0] == "agentbox-guest-init profile: container enter"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "resolve-identity", "materialize-user", "materialize-home", "restrict-dmesg",
        "derive-shell-env", "exec", "total",
    ]  # fmt: skip


def test_contract_variables_do_not_reach_the_command(user_image: str, workspace: Path) -> None:
    done = run_box(user_image, workspace, "env")
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stdout.splitlines() if line.startswith("AGENTBOX_")]


def test_re_entry_keeps_one_dev_entry(user_image: str, workspace: Path) -> None:
    done = run_box(user_image, workspace, "sh", "-c", "grep -c '^dev:' /etc/passwd /etc/group")
    assert done.stdout.splitlines() == ["/etc/passwd:1", "/etc/group:1"], done.stderr


def test_image_contents(user_image: str, workspace: Path) -> None:
    script = (
        "set -e; fish --version; nix-daemon --version | head -1; "
        "agentbox-guest-init --version; loftd-guest-init --version; "
        "test -x /usr/libexec/agentbox/nix-sidecar; podman --version; btrfs --version; "
        "git --version; node --version; python3 --version; "
        "command -v docker docker-compose fuse-overlayfs newuidmap jq tmux curl"
    )
    done = as_user(user_image, "podman", "run", "--rm", "--entrypoint=sh", IMAGE, "-c", script)
    assert done.returncode == 0, done.stderr
    assert "agentbox-guest-init 0.1.0" in done.stdout
    assert "loftd-guest-init 0.1.0" in done.stdout
    labels = as_user(user_image, "podman", "image", "inspect", "--format",
                     '{{index .Labels "agentbox.guest-init.version"}} '
                     '{{index .Labels "agentbox.build.suite"}}', IMAGE)  # fmt: skip
    assert labels.stdout == "0.1.0 trixie\n", labels.stderr


def test_loftd_guest_init_contract(user_image: str, workspace: Path) -> None:
    pw = pwd.getpwnam(user_image)
    ids = [f"--env=LOFTD_HOST_UID={pw.pw_uid}", f"--env=LOFTD_HOST_GID={pw.pw_gid}"]
    entry = "--entrypoint=/bin/loftd-guest-init"
    done = as_user(user_image, "podman", "run", "--rm", "--userns=keep-id", "--user=0:0", *ids,
                   entry, IMAGE, "enter", "--", "id", "-un")  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "dev\n"), done.stderr


def test_the_frozen_guest_init_reports_to_the_host(user_image: str, workspace: Path) -> None:
    """The VM modes' report (``*_GUEST_STATUS_FILE``), from the real frozen guest init: the
    command's status, and ``failed N`` when the guest init itself fails first."""
    status = {"AGENTBOX_GUEST_STATUS_FILE": "/workspace/.agentbox-task/guest.status"}
    done = run_box(user_image, workspace, "sh", "-c", "exit 7", env=status)
    assert done.returncode == 7, done.stderr
    report = workspace / ".agentbox-task" / "guest.status"
    assert report.read_text() == "exited 7\n"
    broken = {**status, "AGENTBOX_HOST_UID": "nobody"}
    done = run_box(user_image, workspace, "true", env=broken)
    assert done.returncode == 3
    assert report.read_text() == "failed 3\n"
    pw = pwd.getpwnam(user_image)
    lofted = as_user(user_image, "podman", "run", "--rm", "--userns=keep-id", "--user=0:0",
                     f"--env=LOFTD_HOST_UID={pw.pw_uid}", f"--env=LOFTD_HOST_GID={pw.pw_gid}",
                     "--env=LOFTD_GUEST_STATUS_FILE=/workspace/loftd.status",
                     f"--volume={workspace}:/workspace", "--entrypoint=/bin/loftd-guest-init",
                     IMAGE, "enter", "--", "sh", "-c", "exit 5")  # fmt: skip
    assert lofted.returncode == 5, lofted.stderr
    assert (workspace / "loftd.status").read_text() == "exited 5\n"


def test_the_command_gets_the_environment_without_the_bundles_loader_variables(
    user_image: str, workspace: Path
) -> None:
    """The frozen guest init's bootloader prepends its private library dir to LD_LIBRARY_PATH
    and sets _PYI_*: none of it reaches the command, and system programs load system
    libraries, not the bundle's."""
    script = "env; echo ---; ldd /usr/bin/curl /usr/bin/git /usr/bin/python3"
    done = run_box(user_image, workspace, "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    env, libs = done.stdout.split("---\n")
    names = [line.split("=", 1)[0] for line in env.splitlines() if "=" in line]
    assert [n for n in names if n.startswith("_PYI_") or n.startswith("LD_LIBRARY_PATH")] == []
    resolved = [line for line in libs.splitlines() if "=>" in line]
    assert resolved, libs
    assert [line for line in resolved if "agentbox-guest-init" in line] == []
    # a library path the user set is theirs and stays
    kept = run_box(user_image, workspace, "sh", "-c", 'echo "$LD_LIBRARY_PATH"',
                   env={"LD_LIBRARY_PATH": "/opt/mine/lib"})  # fmt: skip
    assert (kept.returncode, kept.stdout) == (0, "/opt/mine/lib\n"), kept.stderr
