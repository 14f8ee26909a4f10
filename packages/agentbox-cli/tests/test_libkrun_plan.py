from pathlib import Path

import pytest

from agentbox_cli.libkrun.plan import (
    KrunHost,
    LibkrunRequest,
    default_mem_gib,
    parse_mem,
    plan_libkrun,
    vcpus,
)
from agentbox_state.errors import UsageError

HOST = KrunHost(
    uid=1000, gid=1000, home=Path("/home/u"), cwd=Path("/src/app"),
    mem_total_kib=24 * 1024 * 1024, cpus=8, stdin_tty=False, stdout_tty=False,
)  # fmt: skip
REQ = LibkrunRequest(
    image="localhost/agentbox:latest", workspace_key="app-0123456789ab",
    hostname="app-agentbox", task_name="app-00112233aabbccdd",
    state_dir=Path("/s/ws"), sccache=Path("/s/sccache"), command=("true",),
)  # fmt: skip


def test_the_whole_podman_run() -> None:
    assert plan_libkrun(REQ, HOST).run.argv() == [
        "podman", "run", "--rm", "--interactive", "--name", "app-00112233aabbccdd",
        "--runtime", "crun", "--userns", "keep-id", "--user", "0:0",
        "--hostname", "app-agentbox", "--workdir", "/workspace",
        "--label", "agentbox.role=libkrun-task", "--label", "agentbox.workspace=app-0123456789ab",
        "--annotation", "run.oci.handler=krun", "--annotation", "krun.ram_mib=19456",
        "--annotation", "krun.cpus=6", "--annotation", "krun.nested_virt=1",
        "--annotation", "krun.disk.0.path=/s/ws/libkrun-nix.raw",
        "--annotation", "krun.disk.0.id=agentbox-nix", "--annotation", "krun.disk.0.readonly=0",
        "--annotation", "krun.disk.1.path=/s/ws/libkrun-containers.raw",
        "--annotation", "krun.disk.1.id=agentbox-containers",
        "--annotation", "krun.disk.1.readonly=0", "--annotation", "krun.use_passt=1",
        "--env", "AGENTBOX_HOST_UID=1000", "--env", "AGENTBOX_HOST_GID=1000",
        "--env", "AGENTBOX_KVM_DROP_TO_DEV=1", "--env", "AGENTBOX_LIBKRUN_NIX_OVERLAY=1",
        "--env", "AGENTBOX_LIBKRUN_CONTAINERS_STORAGE=1",
        "--env", "AGENTBOX_LIBKRUN_NIX_DISK_ID=agentbox-nix",
        "--env", "AGENTBOX_LIBKRUN_NIX_DISK_LABEL=AGENTBOX_NIX",
        "--env", "AGENTBOX_LIBKRUN_CONTAINERS_DISK_ID=agentbox-containers",
        "--env", "AGENTBOX_LIBKRUN_CONTAINERS_DISK_LABEL=AGENTBOX_CONTAINERS",
        "--env", "SCCACHE_DIR=/home/dev/.cache/sccache", "--env", "AGENTBOX_LIBKRUN_USE_PASST=1",
        "--volume", "/src/app:/workspace", "--volume", "/home/u/.codex:/home/dev/.codex",
        "--volume", "/home/u/.pi:/home/dev/.pi", "--volume", "/s/ws/cargo:/home/dev/.cargo",
        "--volume", "/s/sccache:/home/dev/.cache/sccache",
        "--tmpfs", "/tmp:rw,exec,mode=1777", "--device", "/dev/net/tun",
        "localhost/agentbox:latest", "true",
    ]  # fmt: skip


def test_tsi_publish_mem_guest_init_and_root() -> None:
    import dataclasses

    tsi = plan_libkrun(dataclasses.replace(REQ, tsi=True, mem_gib=4), HOST).run
    assert ("krun.no_proxy", "1") in tsi.annotations
    assert ("krun.use_passt", "1") not in tsi.annotations
    assert ("krun.ram_mib", "4096") in tsi.annotations
    with pytest.raises(UsageError, match="cannot be used with --tsi"):
        plan_libkrun(dataclasses.replace(REQ, tsi=True, publish=("80:80",)), HOST)
    published = plan_libkrun(dataclasses.replace(REQ, publish=("8080:80", "udp:53:53")), HOST)
    assert published.run.publish == ("8080:80", "udp:53:53")
    gi = plan_libkrun(dataclasses.replace(REQ, guest_init=Path("/b/gi"), root=True), HOST).run
    assert gi.mounts[-1].spec() == "/b/gi:/bin/agentbox-guest-init:ro"
    assert ("AGENTBOX_ENTER_AS_ROOT", "1") in gi.env
    as_root = plan_libkrun(REQ, dataclasses.replace(HOST, uid=0, gid=0)).run
    assert ("AGENTBOX_ENTER_AS_ROOT", "1") in as_root.env
    assert not [k for k, _ in as_root.env if k.startswith("AGENTBOX_HOST_")]


@pytest.mark.parametrize(("total", "want"), [(1, 1), (2, 2), (6, 6), (7, 5), (8, 6), (64, 62)])
def test_vcpus(total: int, want: int) -> None:
    assert vcpus(total) == want


def test_memory() -> None:
    assert default_mem_gib(24 * 1024 * 1024) == 19
    assert default_mem_gib(2 * 1024 * 1024) == 1
    with pytest.raises(UsageError, match="less than 1 GiB"):
        default_mem_gib(1024 * 1024)
    assert parse_mem("8") == 8
    for bad in ("0", "8G", "1.5", "-1", "", "4194304"):
        with pytest.raises(UsageError, match="invalid --mem"):
            parse_mem(bad)
