"""The libkrun boundary against a stub libkrun compiled from C here: exact call order and
arguments, errno mapping for every failing call, exit status of krun_start_enter."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentbox_krun.errors import KrunError, KrunLoadError
from agentbox_krun.ffi import load
from agentbox_krun.helper import describe, outcome
from agentbox_krun.launchconf import Disk, LaunchConf

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Launched

ENV_VAR = "AGENTBOX_LIBKRUN_LIBRARY"

CONF = LaunchConf(
    task_rootfs="/s/tasks/t1/rootfs-btrfs-snapshot", ram_mib=4096, vcpus=2, workdir="/workspace",
    exec_path="/bin/agentbox-guest-init",
    argv=("agentbox-guest-init", "microvm", "enter", "--", "true"),
    env=("AGENTBOX_HOST_UID=1000", "AGENTBOX_MICROVM_WORKSPACE_TAG=agentbox-workspace"),
    disks=(Disk("agentbox-nix", "/s/n.raw", False), Disk("agentbox-containers", "/s/c.raw", False)),
    workspace_source="/src/app", workspace_tag="agentbox-workspace", workspace_target="/workspace",
)  # fmt: skip

SETUP_CALLS = [
    "krun_set_log_level 0",
    "krun_create_ctx",
    "krun_set_vm_config 7 2 4096",
    "krun_set_root 7 /s/tasks/t1/rootfs-btrfs-snapshot",
    "krun_add_disk 7 agentbox-nix /s/n.raw 0",
    "krun_add_disk 7 agentbox-containers /s/c.raw 0",
    "krun_disable_implicit_console 7",
    "krun_add_virtio_console_default 7 0 1 2",
    "krun_add_virtiofs3 7 agentbox-workspace /src/app 0 0",
    "krun_set_workdir 7 /workspace",
    "krun_set_exec 7 /bin/agentbox-guest-init",
    "  argv[0]=agentbox-guest-init",
    "  argv[1]=microvm",
    "  argv[2]=enter",
    "  argv[3]=--",
    "  argv[4]=true",
    "  env[0]=AGENTBOX_HOST_UID=1000",
    "  env[1]=AGENTBOX_MICROVM_WORKSPACE_TAG=agentbox-workspace",
]


def test_call_order_and_exit_status(
    stub: Path, tmp_path: Path, launch: Callable[..., Launched]
) -> None:
    code, calls, _, err = launch(stub, CONF, KRUN_STUB_EXIT="42")
    assert (code, err) == (42, "")
    assert calls == [*SETUP_CALLS, "krun_start_enter 7"]
    assert outcome(tmp_path) is None  # libkrun took over: 42 is the guest's status


SETUP_FUNCTIONS = ["krun_set_vm_config", "krun_set_root", "krun_add_disk",
                   "krun_disable_implicit_console", "krun_add_virtio_console_default",
                   "krun_add_virtiofs3", "krun_set_workdir", "krun_set_exec"]  # fmt: skip


@pytest.mark.parametrize("fn", SETUP_FUNCTIONS)
def test_a_failing_setup_call_frees_the_context(
    stub: Path, tmp_path: Path, fn: str, launch: Callable[..., Launched]
) -> None:
    code, calls, _, err = launch(stub, CONF, KRUN_STUB_FAIL=f"{fn}:22")
    assert code == 125
    assert err == f"libkrun helper: libkrun setup failed: {fn} failed: EINVAL (Invalid argument)\n"
    assert calls[-1] == "krun_free_ctx 7"
    assert "krun_start_enter 7" not in calls
    assert outcome(tmp_path) == "setup"


def test_start_failure_and_create_failure(
    stub: Path, tmp_path: Path, launch: Callable[..., Launched]
) -> None:
    code, calls, _, err = launch(stub, CONF, KRUN_STUB_FAIL="krun_start_enter:12")
    assert code == 126
    assert err == ("libkrun helper: libkrun start failed: krun_start_enter failed: ENOMEM "
                   "(Cannot allocate memory)\n")  # fmt: skip
    assert outcome(tmp_path) == "start-failed"
    code, calls, _, err = launch(stub, CONF, KRUN_STUB_FAIL="krun_create_ctx:1")
    assert code == 125
    assert calls == ["krun_set_log_level 0", "krun_create_ctx"]


LOFTD_CONF = LaunchConf(
    task_rootfs="/s/tasks/t2/rootfs-btrfs-snapshot", ram_mib=4096, vcpus=2, workdir="/workspace",
    exec_path="/usr/bin/loftd-guest-init", argv=("loftd-guest-init", "enter", "--", "true"),
    env=("LOFTD_HOST_UID=1000",), disks=(Disk("loftd-containers", "/s/c.raw", False),),
    init_log=True, nested_virt=True,
)  # fmt: skip


@pytest.mark.parametrize(
    ("env", "nested"),
    [
        ({"KRUN_STUB_FAIL": "krun_check_nested_virt:95"}, []),  # Linux libkrun: EOPNOTSUPP
        ({}, []),  # 0: not supported
        ({"KRUN_STUB_NESTED": "1"}, ["krun_set_nested_virt 7 1"]),
    ],
)  # fmt: skip
def test_loftd_call_order(
    stub: Path, env: dict[str, str], nested: list[str], launch: Callable[..., Launched]
) -> None:
    done = launch(stub, LOFTD_CONF, env_var="LOFTD_LIBKRUN_LIBRARY", KRUN_STUB_EXIT="9", **env)
    assert (done.code, done.err) == (9, "")
    assert done.calls == [
        "krun_init_log 2 0 2 1",  # stderr, off, no colours, no environment override
        "krun_create_ctx",
        "krun_set_vm_config 7 2 4096",
        "krun_check_nested_virt",
        *nested,
        "krun_set_root 7 /s/tasks/t2/rootfs-btrfs-snapshot",
        "krun_add_disk 7 loftd-containers /s/c.raw 0",
        "krun_disable_implicit_console 7",
        "krun_add_virtio_console_default 7 0 1 2",
        "krun_set_workdir 7 /workspace",  # no virtiofs: loftd grafts it (mount.N; none here)
        "krun_set_exec 7 /usr/bin/loftd-guest-init",
        "  argv[0]=loftd-guest-init", "  argv[1]=enter", "  argv[2]=--", "  argv[3]=true",
        "  env[0]=LOFTD_HOST_UID=1000",
        "krun_start_enter 7",
    ]  # fmt: skip


def test_a_nested_virt_check_error_is_a_setup_error(
    stub: Path, tmp_path: Path, launch: Callable[..., Launched]
) -> None:
    code, calls, _, _ = launch(stub, CONF, KRUN_STUB_FAIL="krun_check_nested_virt:5")
    assert (code, calls[-1]) == (0, "krun_start_enter 7")  # microvm never asks
    done = launch(stub, LOFTD_CONF, KRUN_STUB_FAIL="krun_check_nested_virt:5")
    assert done.code == 125
    assert "krun_check_nested_virt failed: EIO" in done.err


def test_failures_before_a_context_and_of_loftd_calls(
    stub: Path, tmp_path: Path, launch: Callable[..., Launched]
) -> None:
    code, calls, _, err = launch(stub, CONF, KRUN_STUB_FAIL="krun_set_log_level:1")
    assert (code, calls) == (125, ["krun_set_log_level 0"])  # no context yet: nothing to free
    assert err == "libkrun helper: libkrun setup failed: krun_set_log_level failed: EPERM " \
        "(Operation not permitted)\n"  # fmt: skip
    for fn, nested, last in (("krun_init_log", "0", "krun_init_log 2 0 2 1"),
                             ("krun_set_nested_virt", "1", "krun_free_ctx 7")):  # fmt: skip
        done = launch(stub, LOFTD_CONF, KRUN_STUB_FAIL=f"{fn}:22", KRUN_STUB_NESTED=nested)
        assert done.code == 125
        assert f"{fn} failed: EINVAL" in done.err
        assert done.calls[-1] == last


def test_the_vm_holds_its_task_lock(stub: Path, tmp_path: Path,
                                     launch: Callable[..., Launched]) -> None:  # fmt: skip
    """Shared: the command line holds it too; a garbage collector's exclusive try fails."""
    lock = tmp_path / "task" / ".task.lock"
    conf = CONF._replace(task_lock=str(lock))
    probe = f"flock -n -x {lock} true && echo free || echo held; flock -n -s {lock} echo shared\n"
    gone = launch(stub, conf, on_enter=probe)  # the task was collected: the VM must not start
    assert (gone.code, gone.out, gone.calls) == (125, "", [])
    assert gone.err == ("libkrun helper: preparing the root failed: task task is being removed "
                        "by a later run (the run that made it is gone)\n")  # fmt: skip
    lock.parent.mkdir()
    lock.touch()  # as the command line makes it
    done = launch(stub, conf, on_enter=probe)
    assert (done.code, done.out, done.err) == (0, "held\nshared\n", "")


def test_helper_status_before_it_runs_and_unknown(tmp_path: Path) -> None:
    assert outcome(tmp_path) == "missing"
    assert describe("missing").startswith("starting: it left no helper.status")
    (tmp_path / "helper.status").write_text("load\n")
    assert (outcome(tmp_path), describe("load")) == ("load", "loading libkrun")
    (tmp_path / "helper.status").write_text("zzz\n")
    assert describe(str(outcome(tmp_path))) == "in an unknown phase 'zzz'"
    (tmp_path / "helper.status").write_text("started\n")
    assert outcome(tmp_path) is None


def test_without_the_optional_functions(
    minimal_stub: Path, tmp_path: Path, launch: Callable[..., Launched]
) -> None:
    krun = load({ENV_VAR: str(minimal_stub)}, ENV_VAR)
    assert not any(krun.has(f) for f in ("krun_set_root", "krun_add_virtiofs3", "krun_init_log"))
    with pytest.raises(KrunError) as caught:  # using a missing feature is a clear error
        krun.init_log(2, 0, 2, 1)
    assert caught.value.message == (
        f"{minimal_stub} has no krun_init_log: this feature needs a newer libkrun"
    )
    with pytest.raises(KrunError, match=r"cannot share /ro read-only \(no virtiofs3\)"):
        krun.add_virtiofs(7, "tag", "/ro", readonly=True)
    # the helper still runs both orders: root through virtiofs "/dev/root", the implicit
    # console kept, krun_set_log_level for loftd too, no nested-virt question
    code, calls, _, err = launch(minimal_stub, CONF, KRUN_STUB_EXIT="3")
    assert (code, err) == (3, "")
    assert calls[:4] == [
        "krun_set_log_level 0",
        "krun_create_ctx",
        "krun_set_vm_config 7 2 4096",
        "krun_add_virtiofs 7 /dev/root /s/tasks/t1/rootfs-btrfs-snapshot",
    ]
    assert "krun_add_virtiofs 7 agentbox-workspace /src/app" in calls
    assert not [c for c in calls if "console" in c]
    done = launch(minimal_stub, LOFTD_CONF)
    assert (done.code, done.err) == (0, "")
    assert done.calls[:4] == [
        "krun_set_log_level 0", "krun_create_ctx", "krun_set_vm_config 7 2 4096",
        "krun_add_virtiofs 7 /dev/root /s/tasks/t2/rootfs-btrfs-snapshot",
    ]  # fmt: skip


def test_load_failures_name_every_path(tmp_path: Path) -> None:
    with pytest.raises(KrunLoadError) as caught:
        load({ENV_VAR: str(tmp_path / "nope.so")}, ENV_VAR)
    assert caught.value.message.startswith(f"cannot load libkrun; tried: {tmp_path}/nope.so (")
    assert ENV_VAR in (caught.value.hint or "")
    with pytest.raises(KrunLoadError) as sonames:
        load({}, ENV_VAR)
    assert "libkrun.so.1 (" in sonames.value.message
    assert "libkrun.so (" in sonames.value.message


def test_nul_bytes_are_refused_before_the_call(stub: Path) -> None:
    krun = load({ENV_VAR: str(stub)}, ENV_VAR)
    with pytest.raises(KrunError, match="workdir contains a NUL byte"):
        krun.set_workdir(7, "/work\0space")
    with pytest.raises(KrunError, match="vcpus 300 does not fit"):
        krun.set_vm_config(7, 300, 1024)
