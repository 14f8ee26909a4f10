import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentbox_cli.container import imagefacts, sidecar
from agentbox_cli.container.plan import SidecarPlan, plan_sidecar
from agentbox_podman.errors import PodmanError
from agentbox_state.testing import HidingRunner, RecordingRunner

IMAGE = "localhost/agentbox:latest"
NAME = "agentbox-nix-app-0123456789ab"
D = "--log-level=debug"
ID = "f" * 64
FMT = ("{{.Id}}\t{{json .Config.Entrypoint}}\t{{.GraphDriver.Name}}\t"
       "{{.GraphDriver.Data.UpperDir}}")  # fmt: skip
ENTRY = '["/bin/agentbox-guest-init","default","enter","--"]'


def facts_out(image_id: str = ID, entry: str = ENTRY, root: Path = Path("/st")) -> str:
    return f"{image_id}\t{entry}\toverlay\t{root}/overlay/{'a' * 64}/diff\n"


def inspect(debug: bool = False) -> list[str]:
    return ["podman", *([D] if debug else []), "image", "inspect", "--format", FMT, IMAGE]


def running_state(plan: SidecarPlan, **fields: str) -> None:
    """A state file whose sidecar looks alive: its 'conmon' is this process."""
    with open("/proc/self/cmdline", "rb") as f:
        word = f.read().split(b"\0")[0].decode()
    state = {"name": plan.name, "image": IMAGE, "image_id": ID, "mounted": ID,
             "conmon_pid": str(os.getpid()), "container_id": word, **fields}  # fmt: skip
    plan.state_file.write_text(json.dumps(state))


def test_a_cold_start_mounts_the_image_by_id_then_starts_the_sidecar(tmp_path: Path) -> None:
    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=True)
    rec = ConmonRunner()
    rec.script(*inspect(True), stdout=facts_out(root=tmp_path))
    rec.script("podman", D, "run", stdout="cid0\n",
               stderr='time="t" level=debug msg="Shutting down engines"\n')  # fmt: skip
    index = tmp_path / "overlay-images" / "images.json"
    index.parent.mkdir()
    index.write_text("{}")
    stamp = imagefacts.store_stamp(os.fspath(index))
    prepared = sidecar.ensure(plan, rec, say=print)
    assert prepared.status == "starting"
    assert prepared.facts is not None
    assert prepared.facts.id == ID
    assert prepared.facts.store_index == os.fspath(index)
    unshare = ["podman", D, "unshare", "sh", "-c"]
    # no state file: nothing was left to clean up (it is written before anything is mounted)
    assert rec.argvs == [["fuse-overlayfs", "--version"], inspect(True),
                         [*unshare, plan.mount_script(ID)]]  # fmt: skip
    index.write_text('{"rebuilt": 1}')  # the image is rebuilt while the sidecar starts
    sidecar.start(plan, rec, prepared.facts)
    # the image by its ID (the one whose /nix is mounted); conmon's pid from its pid file
    assert rec.argvs[3:] == [plan.run_argv(ID)]
    assert plan.run_argv(ID)[-3:] == ["--conmon-pidfile", str(plan.conmon_pidfile), ID]
    assert sidecar.read_state(plan.state_file) == {
        "name": NAME, "image": IMAGE, "image_id": ID, "mounted": ID, "conmon_pid": "4242",
        "container_id": "cid0", "store_index": os.fspath(index), "store_stamp": stamp,
        "fuse_pid": "",  # no fuse-overlayfs serves this test's mount point
    }  # fmt: skip
    # so the next run sees the change and asks Podman for the tag's ID again
    rec.script(*inspect(True), stdout=facts_out("e" * 64, root=tmp_path))
    mp = pytest.MonkeyPatch()
    mp.setattr(sidecar, "alive", lambda state: True)
    mp.setattr(sidecar, "tasks_running", lambda p, r: False)
    try:
        again = sidecar.ensure(plan, rec, say=lambda m: None)
    finally:
        mp.undo()
    assert again.facts is not None
    assert again.facts.id == "e" * 64


class ConmonRunner(RecordingRunner):
    """Writes the conmon pid file a ``podman run --conmon-pidfile`` would."""

    def run(self, argv, **kw):  # type: ignore[no-untyped-def]
        if "--conmon-pidfile" in argv:
            Path(argv[argv.index("--conmon-pidfile") + 1]).write_text("4242")
        return super().run(argv, **kw)


def test_reuse_without_podman_while_the_image_index_is_unchanged(tmp_path: Path) -> None:
    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=False)
    index = tmp_path / "images.json"
    index.write_text("{}")
    running_state(plan, store_index=str(index), store_stamp=imagefacts.store_stamp(str(index)))
    rec = RecordingRunner()
    assert sidecar.ensure(plan, rec, say=print) == sidecar.Prepared("reused")
    assert rec.argvs == []
    # the index changed (a build, a tag, a pull): one inspect; the same ID is still reused
    index.write_text('{"x": 1}')
    rec.script(*inspect(), stdout=facts_out(root=tmp_path))
    assert sidecar.ensure(plan, rec, say=print) == sidecar.Prepared("reused")
    assert rec.argvs == [["fuse-overlayfs", "--version"], inspect()]
    assert sidecar.read_state(plan.state_file)["store_stamp"] == imagefacts.store_stamp(
        os.fspath(tmp_path / "overlay-images" / "images.json")
    )


def test_a_new_image_id_replaces_an_idle_sidecar_and_says_so(tmp_path: Path) -> None:
    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=False)
    running_state(plan, image_id="e" * 64, mounted="e" * 64, store_index="", store_stamp="")
    rec = RecordingRunner()
    rec.script(*inspect(), stdout=facts_out())
    said: list[str] = []
    tasks: list[bool] = []

    def no_tasks(p: SidecarPlan, r: object) -> bool:
        tasks.append(True)
        return False

    mp = pytest.MonkeyPatch()
    mp.setattr(sidecar, "tasks_running", no_tasks)
    try:
        prepared = sidecar.ensure(plan, rec, say=said.append)
    finally:
        mp.undo()
    assert prepared.status == "starting"
    assert tasks == [True]
    assert said == [
        f"{IMAGE} is now image {ID[:12]}, but the project's Nix sidecar serves eeeeeeeeeeee: "
        "waiting for the project's running tasks to end, then replacing it (Ctrl-C stops "
        "waiting)"
    ]
    # the old overlay's image is unmounted by its own ID, the new one mounted by its own
    assert rec.argvs[2:] == [
        ["podman", "rm", "--force", "--ignore", NAME],
        ["podman", "unshare", "sh", "-c", plan.unmount_script("e" * 64)],
        ["podman", "unshare", "sh", "-c", plan.mount_script(ID)],
    ]


def test_a_new_image_waits_while_a_task_holds_the_old_sidecar(tmp_path: Path) -> None:
    import threading
    import time

    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=False)
    running_state(plan, image_id="e" * 64, mounted="e" * 64)
    task = sidecar.users_lock(tmp_path)
    task.acquire(shared=True)  # a running task of the old image
    rec = RecordingRunner()
    rec.script(*inspect(), stdout=facts_out())
    mp = pytest.MonkeyPatch()
    mp.setattr(sidecar, "tasks_running", lambda p, r: False)
    ended = time.monotonic() + 0.6
    threading.Timer(0.6, task.release).start()
    try:
        assert sidecar.ensure(plan, rec, say=lambda m: None).status == "starting"
    finally:
        mp.undo()
    assert time.monotonic() >= ended  # nothing was torn down under the task
    assert ["podman", "rm", "--force", "--ignore", NAME] in rec.argvs


class RecordingHidingRunner(HidingRunner):
    def __init__(self, hide: list[str]) -> None:
        super().__init__({"PATH": "/usr/bin:/bin"}, hide=hide)
        self.argvs: list[list[str]] = []

    def run(self, argv, **kw):  # type: ignore[no-untyped-def]
        self.argvs.append(list(argv))
        return super().run(argv, **kw)


def test_without_fuse_overlayfs_nothing_is_started_or_made(tmp_path: Path) -> None:
    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=False)
    runner = RecordingHidingRunner(["fuse-overlayfs"])
    with pytest.raises(PodmanError) as caught:
        sidecar.ensure(plan, runner, say=print)
    assert caught.value.message == (
        "container mode needs fuse-overlayfs for the project's /nix overlay, and it is not "
        "installed (or not on PATH)"
    )
    assert caught.value.hint == "install it: apt-get install fuse-overlayfs (Debian/Ubuntu)"
    assert runner.argvs == [["fuse-overlayfs", "--version"]]
    assert list(tmp_path.iterdir()) == []


def test_an_image_without_nix_or_guest_init_is_named_and_nothing_runs(tmp_path: Path) -> None:
    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=False)
    rec = RecordingRunner()
    rec.script(*inspect(), stdout=facts_out(entry='["sh"]'))
    rec.script("podman", "unshare", "sh", "-c", plan.mount_script(ID), returncode=42,
               stdout="missing: /nix /usr/bin/agentbox-guest-init\n")  # fmt: skip
    with pytest.raises(PodmanError) as caught:
        sidecar.ensure(plan, rec, say=print)
    assert caught.value.message == (
        f"image {IMAGE} (ffffffffffff) cannot run in container mode: it has no /nix (the Nix "
        "store the sidecar serves); no guest init (/usr/bin/agentbox-guest-init); its entry "
        "point is not the guest init (it is sh)"
    )
    assert caught.value.hint == sidecar.IMAGE_HINT
    assert "agentbox image build" in sidecar.IMAGE_HINT
    assert not [a for a in rec.argvs if a[:2] == ["podman", "run"]]
    assert rec.argvs[-2:] == [  # the cleanup: by the ID it mounted
        ["podman", "rm", "--force", "--ignore", NAME],
        ["podman", "unshare", "sh", "-c", plan.unmount_script(ID)],
    ]
    assert not plan.state_file.exists()


def test_a_missing_image_is_pulled_and_a_failed_pull_names_it(tmp_path: Path) -> None:
    plan = plan_sidecar("localhost/nosuch:1", "app-0123456789ab", tmp_path, rootless=True,
                        debug=False)  # fmt: skip
    rec = RecordingRunner()
    argv = ["podman", "image", "inspect", "--format", FMT, "localhost/nosuch:1"]
    not_known = "Error: inspecting object: localhost/nosuch:1: image not known\n"
    rec.script(*argv, returncode=125, stderr=not_known)
    rec.script("podman", "pull", returncode=125, stderr=(
        "Trying to pull localhost/nosuch:1...\nError: initializing source "
        "docker://localhost/nosuch:1: pinging container registry localhost: connection "
        "refused\n"))  # fmt: skip
    with pytest.raises(PodmanError) as caught:
        sidecar.ensure(plan, rec, say=print)
    assert caught.value.message == (
        "image localhost/nosuch:1 is not in local storage, and pulling it failed: initializing "
        "source docker://localhost/nosuch:1: pinging container registry localhost: connection "
        "refused"
    )
    assert rec.argvs == [["fuse-overlayfs", "--version"], argv,
                         ["podman", "pull", "--quiet", "localhost/nosuch:1"]]  # fmt: skip


def test_a_failed_sidecar_start_tears_down(tmp_path: Path) -> None:
    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=False, debug=False)
    rec = RecordingRunner()
    rec.script("podman", "run", returncode=125, stderr="Error: no\n")
    facts = imagefacts.ImageFacts(ID, ["/bin/agentbox-guest-init"], "")
    plan.state_file.write_text(json.dumps({"mounted": ID}))
    with pytest.raises(Exception, match="failed with exit status 125"):
        sidecar.start(plan, rec, facts)
    assert rec.argvs[-2:] == [["podman", "rm", "--force", "--ignore", NAME],
                              ["sh", "-c", plan.unmount_script(ID)]]  # fmt: skip
    assert not plan.state_file.exists()


def test_leftovers_of_a_crash_are_cleaned_first(tmp_path: Path) -> None:
    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=False)
    plan.state_file.write_text(json.dumps({"name": NAME, "image": IMAGE, "image_id": ID,
                                           "mounted": ID}))  # fmt: skip
    rec = RecordingRunner()
    rec.script(*inspect(), stdout=facts_out())
    assert sidecar.ensure(plan, rec, say=print).status == "starting"
    assert rec.argvs[2:] == [
        ["podman", "rm", "--force", "--ignore", NAME],
        ["podman", "unshare", "sh", "-c", plan.unmount_script(ID)],
        ["podman", "unshare", "sh", "-c", plan.mount_script(ID)],
    ]


def test_the_state_file_is_a_strict_json_record(tmp_path: Path) -> None:
    from agentbox_state.recordfile import RecordFileError

    path = tmp_path / "nix-sidecar.state"
    assert sidecar.read_state(path) == {}
    sidecar._write_state(path, {"name": NAME, "mounted": ID})
    assert json.loads(path.read_text()) == {"name": NAME, "mounted": ID}
    assert sidecar.read_state(path) == {"name": NAME, "mounted": ID}
    # the key=value lines of the previous version: its running sidecar is found after an upgrade
    path.write_text(f"name={NAME}\nmounted={ID}\nconmon_pid=42\n")
    assert sidecar.read_state(path) == {"name": NAME, "mounted": ID, "conmon_pid": "42"}
    path.write_text("not a record")
    with pytest.raises(RecordFileError) as caught:
        sidecar.read_state(path)
    assert caught.value.message == (
        f"the Nix sidecar state {path} is not JSON (Expecting value at line 1 column 1)"
    )
    path.write_text('{"conmon_pid": 42}')
    with pytest.raises(RecordFileError, match="has 'conmon_pid' as an integer, not a string"):
        sidecar.read_state(path)


def test_parse_facts() -> None:
    f = imagefacts.parse_facts(facts_out())
    assert f == imagefacts.ImageFacts(ID, ["/bin/agentbox-guest-init", "default", "enter", "--"],
                                   "/st/overlay-images/images.json", driver="overlay")  # fmt: skip
    vfs = imagefacts.parse_facts(f"{ID}\tnull\tvfs\t<no value>\n")
    assert vfs == imagefacts.ImageFacts(ID, [], "", driver="vfs")
    with pytest.raises(PodmanError):
        imagefacts.parse_facts("")


def test_the_reaper_runs_with_debug_when_the_run_did(tmp_path: Path) -> None:
    for debug, flags in ((True, ["--debug"]), (False, [])):
        plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=debug)
        rec = RecordingRunner()
        sidecar.schedule_removal(tmp_path, plan, 120, rec)
        assert rec.argvs == [
            [sys.executable, "-m", "agentbox_cli", *flags, "internal", "sidecar-reap", "--",
             str(tmp_path), IMAGE, "120"],
        ]  # fmt: skip


def test_the_image_lookup_and_the_cold_start_share_one_inspect(tmp_path: Path) -> None:
    """Container mode's "is the image here?" is the inspect the cold start needs: its answer
    is kept (stamped with the index as it was before it) and not asked again."""
    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=False)
    index = tmp_path / "overlay-images" / "images.json"
    index.parent.mkdir()
    index.write_text("{}")
    stamp = imagefacts.store_stamp(os.fspath(index))
    rec = RecordingRunner()
    rec.script(*inspect(), stdout=facts_out(root=tmp_path))
    missing = ["podman", "image", "inspect", "--format", FMT, "docker.io/x/y:1"]
    rec.script(*missing, returncode=125, stderr="Error: docker.io/x/y:1: image not known\n")
    cache = imagefacts.FactsCache(rec, debug=False, known_index=os.fspath(index))
    assert cache.exists(IMAGE)
    assert not cache.exists("docker.io/x/y:1")
    index.write_text('{"rebuilt": 1}')  # after the inspect: the next run must see it
    prepared = sidecar.ensure(plan, rec, say=print, cache=cache)
    assert prepared.facts == imagefacts.ImageFacts(
        ID, ["/bin/agentbox-guest-init", "default", "enter", "--"], os.fspath(index),
        store_stamp=stamp, driver="overlay",
    )  # fmt: skip
    assert rec.argvs == [inspect(), missing, ["fuse-overlayfs", "--version"],
                         ["podman", "unshare", "sh", "-c", plan.mount_script(ID)]]  # fmt: skip


def test_an_inspect_that_fails_for_another_reason_is_not_taken_for_a_missing_image() -> None:
    rec = RecordingRunner()
    rec.script(*inspect(), returncode=125, stderr="Error: database is locked\n")
    with pytest.raises(Exception, match="exit status 125"):
        imagefacts.FactsCache(rec, debug=False).exists(IMAGE)


def test_a_named_image_is_asked_once_and_remembered_too(tmp_path: Path) -> None:
    """``--image X`` skips the lookup; the cold start's inspect is kept all the same, so the
    next cold start of X asks Podman nothing about it."""
    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=False)
    index = tmp_path / "overlay-images" / "images.json"
    index.parent.mkdir()
    index.write_text("{}")
    store = tmp_path / "image-facts.json"
    rec = RecordingRunner()
    rec.script(*inspect(), stdout=facts_out(root=tmp_path))
    first = sidecar.ensure(plan, rec, say=print,
                           cache=imagefacts.FactsCache(rec, debug=False, store=store))  # fmt: skip
    assert rec.argvs[:2] == [["fuse-overlayfs", "--version"], inspect()]
    sidecar.teardown(plan, rec)
    rec.calls.clear()
    again = sidecar.ensure(plan, rec, say=print,
                           cache=imagefacts.FactsCache(rec, debug=False, store=store))  # fmt: skip
    assert again.facts == first.facts
    assert inspect() not in rec.argvs


def fake_fuse(merged: Path) -> subprocess.Popen[bytes]:
    """A process whose command line ends in ``merged``, as fuse-overlayfs's does."""
    # (not `sh -c 'sleep 60'`: the shell may exec sleep, and its command line with it)
    code = "import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, "fuse-overlayfs", os.fspath(merged)])
    # /proc/PID/cmdline reads empty for a moment after Popen returns (the exec is finishing)
    deadline = time.monotonic() + 10
    while os.fsencode(merged) not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the stand-in fuse-overlayfs never started"
        time.sleep(0.005)
    return proc


def test_a_retired_overlay_of_the_same_image_is_reused_without_mounting(tmp_path: Path) -> None:
    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=False)
    fuse = fake_fuse(plan.merged)
    try:
        retired = {"name": NAME, "image": IMAGE, "image_id": ID, "mounted": ID,
                   "conmon_pid": "", "container_id": "", "fuse_pid": str(fuse.pid),
                   "retired": "77@1"}  # fmt: skip
        plan.state_file.write_text(json.dumps(retired))
        rec = RecordingRunner()
        rec.script(*inspect(), stdout=facts_out(root=tmp_path))
        prepared = sidecar.ensure(plan, rec, say=print)
        assert prepared.status == "starting"
        assert rec.argvs == [inspect()]  # no fuse-overlayfs check, no podman unshare
        assert sidecar.read_state(plan.state_file)["retired"] == ""  # a sidecar takes it
        # an overlay of another image is torn down and mounted anew
        plan.state_file.write_text(json.dumps({**retired, "mounted": "e" * 64}))
        rec = RecordingRunner()
        rec.script(*inspect(), stdout=facts_out(root=tmp_path))
        sidecar.ensure(plan, rec, say=print)
        assert rec.argvs[:2] == [inspect(), ["fuse-overlayfs", "--version"]]
        assert ["podman", "unshare", "sh", "-c", plan.mount_script(ID)] in rec.argvs
    finally:
        fuse.kill()
        fuse.wait()


def test_retire_removes_the_container_and_the_old_socket_and_keeps_the_overlay(
    tmp_path: Path,
) -> None:
    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=False)
    fuse = fake_fuse(plan.merged)
    try:
        running_state(plan, fuse_pid=str(fuse.pid))
        rec = RecordingRunner()
        assert sidecar.retire(plan, rec, "77@1")
        socket = f"{plan.merged}/var/nix/daemon-socket/socket"
        assert rec.argvs == [["podman", "rm", "--force", "--ignore", NAME],
                             ["podman", "unshare", "rm", "-f", socket]]  # fmt: skip
        state = sidecar.read_state(plan.state_file)
        assert (state["retired"], state["conmon_pid"], state["container_id"]) == ("77@1", "", "")
    finally:
        fuse.kill()
        fuse.wait()
    # once nothing serves the overlay, retiring is a whole teardown
    rec = RecordingRunner()
    assert not sidecar.retire(plan, rec, "78@2")
    assert rec.argvs == [["podman", "rm", "--force", "--ignore", NAME],
                         ["podman", "unshare", "sh", "-c", plan.unmount_script(ID)]]  # fmt: skip
    assert not plan.state_file.exists()


def test_a_later_reaper_takes_over_a_retired_overlay(tmp_path: Path) -> None:
    # the last task's reaper unmounts the overlay, not the one of an earlier task
    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=False)
    fuse = fake_fuse(plan.merged)
    try:
        running_state(plan, fuse_pid=str(fuse.pid))
        state = {**sidecar.read_state(plan.state_file), "conmon_pid": "", "container_id": "",
                 "retired": "old@1"}  # fmt: skip
        plan.state_file.write_text(json.dumps(state))
        rec = RecordingRunner()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sidecar, "tasks_running", lambda p, r: False)  # Podman: integration
            outcome = sidecar.remove_if_idle(plan, tmp_path, rec, retire_as="new@2")
        assert outcome == sidecar.RETIRED
        assert sidecar.read_state(plan.state_file)["retired"] == "new@2"
        assert sidecar.unmount_if_retired(plan, tmp_path, "old@1", rec) == sidecar.IN_USE
    finally:
        fuse.kill()
        fuse.wait()


def test_only_the_reaper_that_retired_the_overlay_unmounts_it(tmp_path: Path) -> None:
    plan = plan_sidecar(IMAGE, "app-0123456789ab", tmp_path, rootless=True, debug=False)
    (tmp_path / "locks").mkdir()
    plan.state_file.write_text(json.dumps({"name": NAME, "mounted": ID, "retired": "new@2"}))
    rec = RecordingRunner()
    assert sidecar.unmount_if_retired(plan, tmp_path, "old@1", rec) == sidecar.IN_USE
    assert rec.argvs == []
    assert sidecar.unmount_if_retired(plan, tmp_path, "new@2", rec) == sidecar.REMOVED
    assert rec.argvs[-1] == ["podman", "unshare", "sh", "-c", plan.unmount_script(ID)]
