import sys
from pathlib import Path

from agentbox_cli.container import sidecar
from agentbox_cli.container.plan import plan_sidecar
from agentbox_state.testing import RecordingRunner

IMAGE = "localhost/agentbox:latest"
NAME = "agentbox-nix-app-0123456789ab"
D = "--log-level=debug"


def test_start_and_teardown_pass_debug_to_every_podman_call(tmp_path: Path) -> None:
    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=True)
    rec = RecordingRunner()
    rec.script("podman", D, "container", "inspect", stdout=f"true 4242 cid0 {IMAGE}\n",
               stderr='time="t" level=debug msg="Shutting down engines"\n')  # fmt: skip
    assert sidecar.ensure(plan, rec) == "started"
    unshare = ["podman", D, "unshare", "sh", "-c"]
    assert rec.argvs == [
        ["podman", D, "rm", "--force", "--ignore", NAME],
        [*unshare, plan.unmount_script()],
        [*unshare, plan.mount_script()],
        plan.run.argv(),
        [*unshare, plan.wait_script()],
        ["podman", D, "container", "inspect", "--format",
         "{{.State.Running}} {{.State.ConmonPid}} {{.Id}} {{.ImageName}}", NAME],
    ]  # fmt: skip
    assert plan.run.argv()[:3] == ["podman", D, "run"]
    assert f"podman {D} image mount {IMAGE}" in plan.mount_script()
    assert sidecar.read_state(plan.state_file) == {
        "name": NAME, "image": IMAGE, "conmon_pid": "4242", "container_id": "cid0",
    }  # fmt: skip


def test_the_sidecars_own_words_are_reported_without_debug_records(tmp_path: Path) -> None:
    import pytest

    from agentbox_podman.errors import PodmanError

    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=False, debug=True)
    rec = RecordingRunner()
    rec.script("sh", "-c", plan.wait_script(), returncode=1)
    rec.script("podman", D, "logs", stderr='time="t" level=debug msg="x"\nnix-daemon: bad\n')
    with pytest.raises(PodmanError) as caught:
        sidecar.ensure(plan, rec)
    assert caught.value.message == (
        f"the Nix sidecar {NAME} did not open its daemon socket within 10 s:\n  nix-daemon: bad"
    )
    assert ["podman", D, "logs", "--tail", "20", NAME] in rec.argvs


def test_the_reaper_runs_with_debug_when_the_run_did(tmp_path: Path) -> None:
    for debug, flags in ((True, ["--debug"]), (False, [])):
        plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=debug)
        rec = RecordingRunner()
        sidecar.schedule_removal(tmp_path, plan, 120, rec)
        assert rec.argvs == [
            [sys.executable, "-m", "agentbox_cli", *flags, "internal", "sidecar-reap", "--",
             str(tmp_path), IMAGE, "120"],
        ]  # fmt: skip
