"""`agentbox libkrun` through the command line, with a recording runner in place of the tools:
which options each action takes, and what is asked (and left untouched) before a disk grows or
anything is created."""

import itertools
import json
import os
from pathlib import Path

import pytest

from agentbox_cli.main import main
from agentbox_krun import kvm
from agentbox_state.cli.app import Context
from agentbox_state.testing import RecordingRunner

GIB = 1024**3
CRUN_WITH_KRUN = "crun version 1.21\n+SYSTEMD +LIBKRUN\n"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    return {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "st"), "PATH": "/usr/bin"}


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> RecordingRunner:
    """Every command of the invocation goes to this runner (the one seam under the verbs)."""
    recording = RecordingRunner()
    recording.script("crun", "--version", stdout=CRUN_WITH_KRUN)
    recording.script("blkid", stdout="btrfs\n")
    monkeypatch.setattr(Context, "runner", lambda _self: recording)
    return recording


def state_dir(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["paths", "--json"], env) == 0
    return Path(json.loads(capsys.readouterr().out)["workspace_state_dir"])


def nix_disk(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> Path:
    disk = state_dir(env, capsys) / "libkrun-nix.raw"
    disk.parent.mkdir(parents=True)
    with open(disk, "wb") as f:
        f.truncate(64 * GIB)  # sparse; blkid is scripted to say btrfs
    return disk


RESIZE = ["libkrun", "resize", "--target", "nix", "--size", "128"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*RESIZE, "-p", "80:80"], "--publish does not apply to libkrun resize"),
        ([*RESIZE, "--force"], "--force does not apply to libkrun resize"),
        (["libkrun", "reset-nix", "--force", "--tsi", "--mem", "2"],
         "--mem, --tsi does not apply to libkrun reset-nix"),
        (["libkrun", "--size", "2", "--", "true"], "--size does not apply to a libkrun run"),
    ],
    ids=["resize-publish", "resize-force", "reset-vm-options", "run-size"],
)  # fmt: skip
def test_misplaced_options_are_refused(
    env: dict[str, str], argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, env) == 2
    assert capsys.readouterr().err.splitlines()[0] == f"agentbox: {message}"


def test_resize_takes_the_vm_options_of_a_task(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--tsi, --mem and --guest-init shape resize's one-shot guest as they shape a task."""
    assert main([*RESIZE, "--tsi", "--mem", "2", "--guest-init", "/gi"], env) == 1
    err = capsys.readouterr().err
    assert "does not apply" not in err
    assert "does not exist" in err  # the first check of the resize itself: no disk yet


def test_resize_with_a_missing_image_changes_nothing(
    env: dict[str, str], runner: RecordingRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = nix_disk(env, capsys)
    runner.script("podman", "image", "exists", returncode=1)
    env["AGENTBOX_SKIP_KVM_CHECK"] = "1"
    assert main(["--image", "localhost/gone:1", *RESIZE], env) == 1
    assert capsys.readouterr().err.splitlines() == [
        "agentbox: image localhost/gone:1 is not in local storage; nothing was changed",
        "hint: build it (agentbox image build) or pull it (podman pull localhost/gone:1), "
        "then retry",
    ]
    assert disk.stat().st_size == 64 * GIB
    assert not disk.with_name(disk.name + ".lease").exists()
    assert runner.argvs == [
        ["blkid", "--probe", "--output", "value", "--match-tag", "TYPE", os.fspath(disk)],
        ["podman", "ps", "--quiet", "--no-trunc"],
        ["crun", "--version"],
        ["podman", "image", "exists", "localhost/gone:1"],
    ]


def test_resize_refuses_without_kvm_before_the_image_or_the_disk(
    env: dict[str, str], runner: RecordingRunner, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    disk = nix_disk(env, capsys)
    pvm = kvm.KvmFacts(device=True, open_errno=None, cpu_flags=frozenset(),
                       modules=frozenset({"kvm", "kvm_pvm"}))  # fmt: skip
    monkeypatch.setattr(kvm, "probe", lambda: pvm)
    assert main(RESIZE, env) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        "agentbox: libkrun mode cannot start a VM here: /dev/kvm is served by kvm_pvm, a "
        "software hypervisor (no vmx/svm CPU flag, no kvm_intel/kvm_amd module): it boots no "
        "ordinary guest kernel"
    )
    assert disk.stat().st_size == 64 * GIB
    assert runner.argvs[-1] == ["crun", "--version"]


def test_launch_refuses_without_kvm_after_the_handler_and_before_anything_is_created(
    env: dict[str, str], runner: RecordingRunner, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    pvm = kvm.KvmFacts(device=True, open_errno=None, cpu_flags=frozenset(),
                       modules=frozenset({"kvm", "kvm_pvm"}))  # fmt: skip
    monkeypatch.setattr(kvm, "probe", lambda: pvm)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["--image", "localhost/x:1", "libkrun", "--", "true"], env) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("agentbox: libkrun mode cannot start a VM here: /dev/kvm is served")
    assert err[1].endswith("AGENTBOX_SKIP_KVM_CHECK=1 skips this check (for a guest kernel that "
                           "does run here)")  # fmt: skip
    assert runner.argvs == [["crun", "--version"]]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_dry_runs_of_resize_and_reset_change_nothing(
    env: dict[str, str], runner: RecordingRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = nix_disk(env, capsys)
    before = (disk.stat().st_size, disk.stat().st_mtime_ns)
    assert main(["--dry-run", "--image", "localhost/x:1", *RESIZE, "--tsi"], env) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"grow {disk} from 64GiB to 128GiB (sparse)"
    assert out[1].startswith("podman run --rm --name proj-")
    assert out[1].endswith(" --env no_proxy=1 --tmpfs /tmp:rw,exec,mode=1777 --device "
                           "/dev/net/tun localhost/x:1 libkrun resize --target nix")  # fmt: skip
    assert main(["--dry-run", "libkrun", "reset-nix", "--force"], env) == 0
    assert capsys.readouterr().out == (
        f"replace {disk} with a fresh sparse 64GiB btrfs disk (label AGENTBOX_NIX)\n"
    )
    assert (disk.stat().st_size, disk.stat().st_mtime_ns) == before
    assert ["crun", "--version"] not in runner.argvs, "a dry run asks nothing of the host's VM"


def test_the_live_use_probe_asks_podman_with_debug(tmp_path: Path) -> None:
    from agentbox_cli.libkrun.maintenance import containers_using

    disk = tmp_path / "libkrun-nix.raw"
    runner = RecordingRunner()
    runner.script("podman", "--log-level=debug", "ps", stdout="aaa\nbbb\n")
    runner.script("podman", "--log-level=debug", "inspect", stdout=(
        f'task-1 {{"krun.disk.0.path":"{disk}","krun.disk.0.id":"agentbox-nix"}}\n'
        'other {"krun.disk.0.path":"/elsewhere.raw"}\n'
    ))  # fmt: skip
    assert containers_using(disk, runner, debug=True) == ["task-1"]
    assert runner.argvs == [
        ["podman", "--log-level=debug", "ps", "--quiet", "--no-trunc"],
        ["podman", "--log-level=debug", "inspect", "--format",
         "{{.Name}} {{json .Config.Annotations}}", "aaa", "bbb"],
    ]  # fmt: skip
    quiet = RecordingRunner()
    assert containers_using(disk, quiet) == []
    assert quiet.argvs == [["podman", "ps", "--quiet", "--no-trunc"]], "no ids: nothing inspected"


def test_debug_reaches_every_podman_call_of_resize_and_reset_nix(
    env: dict[str, str], runner: RecordingRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = nix_disk(env, capsys)
    runner.script("podman", "--log-level=debug", "image", "exists", returncode=1)
    env["AGENTBOX_SKIP_KVM_CHECK"] = "1"
    assert main(["--debug", "--image", "localhost/gone:1", *RESIZE], env) == 1
    assert runner.argvs == [
        ["blkid", "--probe", "--output", "value", "--match-tag", "TYPE", os.fspath(disk)],
        ["podman", "--log-level=debug", "ps", "--quiet", "--no-trunc"],
        ["crun", "--version"],
        ["podman", "--log-level=debug", "image", "exists", "localhost/gone:1"],
    ]
    runner.calls.clear()
    assert main(["--debug", "--dry-run", "libkrun", "reset-nix", "--force"], env) == 0
    assert runner.argvs == [["podman", "--log-level=debug", "ps", "--quiet", "--no-trunc"]]


def test_an_agent_runs_in_its_worktree_with_its_own_disks(
    env: dict[str, str], runner: RecordingRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    """--agent in libkrun mode: the worktree at /workspace, the repository's git dir at its
    own path (read-only) with what a commit writes (git-worktree(1): the worktree's .git names
    <common>/worktrees/<id> by its absolute path), and the agent's own disks; resize and
    reset-nix work on the agent's disks and refuse an agent that does not exist."""
    proj = Path.cwd()
    git = f"{proj}/.git"
    runner.script("git", "-C", str(proj), "rev-parse", "--path-format=absolute",
                  stdout=f"{proj}\n{git}\n")  # fmt: skip
    runner.script("git", "-C", str(proj), "rev-parse", "--verify", returncode=1)  # new branch
    project_state = state_dir(env, capsys)
    agent = project_state.parent / f"{project_state.name}-agent-a1"
    assert main(["--agent", "a1", "--dry-run", "libkrun", "--", "true"], env) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"agent a1: git -C {proj} worktree add -b agentbox/a1 {agent}/worktree HEAD"
    assert out[1] == (f"disk agentbox-nix: {agent}/libkrun-nix.raw (label AGENTBOX_NIX, sparse "
                      "64GiB, leased)")  # fmt: skip
    podman_run = out[-1].split()
    volumes = [v for k, v in itertools.pairwise(podman_run) if k == "--volume"]
    assert volumes[:6] == [
        f"{agent}/worktree:/workspace", f"{git}:{git}:ro", f"{git}/objects:{git}/objects",
        f"{git}/refs/heads/agentbox:{git}/refs/heads/agentbox",
        f"{git}/logs/refs/heads/agentbox:{git}/logs/refs/heads/agentbox",
        f"{git}/worktrees/worktree:{git}/worktrees/worktree",
    ]  # fmt: skip
    assert f"agentbox.workspace={agent.name}" in podman_run
    assert not agent.exists()  # a dry run makes nothing
    assert main(["--agent", "a1", "--dry-run", *RESIZE], env) == 1
    assert capsys.readouterr().err == (
        f"agentbox: {proj} has no agent a1\n"
        "hint: 'agentbox agents' lists them; a run with --agent makes one\n"
    )
    agent.mkdir(parents=True)
    with open(agent / "libkrun-nix.raw", "wb") as f:
        f.truncate(64 * GIB)
    assert main(["--agent", "a1", "--dry-run", "--image", "localhost/x:1", *RESIZE], env) == 0
    assert capsys.readouterr().out.startswith(
        f"grow {agent}/libkrun-nix.raw from 64GiB to 128GiB (sparse)\n"
    )
    assert main(["--agent", "a1", "--dry-run", "libkrun", "reset-nix", "--force"], env) == 0
    assert capsys.readouterr().out.startswith(f"replace {agent}/libkrun-nix.raw with a fresh")
