"""Libkrun mode's plans, and crun's krun handler's rules applied to every one of them."""

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from agentbox_cli.libkrun.plan import (
    KrunHost,
    LibkrunRequest,
    default_mem_gib,
    plan_libkrun,
    plan_resize,
)
from agentbox_krun.sizing import parse_mem, vcpus
from agentbox_state.errors import UsageError

# What crun's krun handler accepts, as zeroqn/crun documents it in krun.1.md (the agentbox
# branch's man page): "OCI Annotations" lists krun.cpus=NUM (maximum 16), krun.ram_mib=NUM
# (values below 128 MiB are ignored), krun.gpu_flags=FLAGS, krun.use_passt=NUM and
# krun.nested_virt=NUM (a value greater than 0 enables), krun.variant=sev|aws-nitro; "DISK
# CONFIGURATION" adds krun.disk.N.{path,id,readonly}: path and id required, readonly exactly
# `true` or `false`, N `0` or a canonical decimal without sign or leading zeros, indexes
# contiguous from 0, unsupported fields in the krun.disk.N.* namespace rejected. Real crun said
# "invalid krun disk readonly value '0': expected 'true' or 'false'" to readonly=0.
KRUN_ANNOTATIONS = frozenset({
    "krun.cpus", "krun.ram_mib", "krun.gpu_flags", "krun.use_passt", "krun.nested_virt",
    "krun.variant",
})  # fmt: skip
DISK_FIELDS = ("path", "id", "readonly")
NUM = re.compile(r"[0-9]+")
INDEX = re.compile(r"0|[1-9][0-9]*")


def _scalar_problem(key: str, value: str) -> str | None:
    if key in ("krun.cpus", "krun.ram_mib", "krun.use_passt", "krun.nested_virt"):
        if not NUM.fullmatch(value):
            return f"{key}={value!r} is not a number"
        if key == "krun.cpus" and not 1 <= int(value) <= 16:
            return f"krun.cpus={value} is not 1 to 16"
        if key == "krun.ram_mib" and int(value) < 128:
            return f"krun.ram_mib={value} is below 128 (crun ignores it)"
    if key == "krun.variant" and value not in ("sev", "aws-nitro"):
        return f"krun.variant={value!r} is not sev or aws-nitro"
    return None


def krun_problems(annotations: Sequence[tuple[str, str]]) -> list[str]:
    """Every way ``annotations`` break crun's documented krun rules (empty: crun accepts)."""
    problems: list[str] = []
    keys = [key for key, _ in annotations]
    problems += [f"{key} given twice" for key in sorted(set(keys)) if keys.count(key) > 1]
    if dict(annotations).get("run.oci.handler") != "krun":
        problems.append("run.oci.handler=krun is missing")
    disks: dict[int, dict[str, str]] = {}
    for key, value in annotations:
        if not key.startswith("krun."):
            continue
        if key.startswith("krun.disk."):
            index, _, field = key.removeprefix("krun.disk.").partition(".")
            if not INDEX.fullmatch(index):
                problems.append(f"{key}: index {index!r} is not 0 or a canonical decimal")
            elif field not in DISK_FIELDS:
                problems.append(f"{key}: unsupported disk field {field!r}")
            else:
                disks.setdefault(int(index), {})[field] = value
        elif key not in KRUN_ANNOTATIONS:
            problems.append(f"{key}: not an annotation of crun's krun handler")
        elif (problem := _scalar_problem(key, value)) is not None:
            problems.append(problem)
    for n, fields in sorted(disks.items()):
        problems += [f"krun.disk.{n}.{f} is missing" for f in ("path", "id") if f not in fields]
        if fields.get("readonly", "false") not in ("true", "false"):
            problems.append(f"krun.disk.{n}.readonly={fields['readonly']!r} is not true or false")
    if sorted(disks) != list(range(len(disks))):
        problems.append(f"disk indexes {sorted(disks)} are not contiguous from 0")
    return problems


GOOD_DISK = [("run.oci.handler", "krun"), ("krun.disk.0.path", "/path/to/nix.raw"),
             ("krun.disk.0.id", "nix"), ("krun.disk.0.readonly", "false")]  # fmt: skip


def test_the_validator_accepts_the_documented_example() -> None:
    assert krun_problems(GOOD_DISK) == []
    assert krun_problems([*GOOD_DISK[:3], ("krun.cpus", "16"), ("krun.use_passt", "1")]) == []


@pytest.mark.parametrize(
    ("annotations", "problem"),
    [
        ([*GOOD_DISK[:3], ("krun.disk.0.readonly", "0")],
         "krun.disk.0.readonly='0' is not true or false"),
        ([*GOOD_DISK, ("krun.disk.01.path", "/a")],
         "krun.disk.01.path: index '01' is not 0 or a canonical decimal"),
        ([*GOOD_DISK, ("krun.disk.2.path", "/b"), ("krun.disk.2.id", "b")],
         "disk indexes [0, 2] are not contiguous from 0"),
        ([("run.oci.handler", "krun"), ("krun.disk.0.path", "/a")], "krun.disk.0.id is missing"),
        ([*GOOD_DISK, ("krun.disk.0.format", "raw")],
         "krun.disk.0.format: unsupported disk field 'format'"),
        ([*GOOD_DISK, ("krun.no_proxy", "1")],
         "krun.no_proxy: not an annotation of crun's krun handler"),
        ([*GOOD_DISK, ("krun.cpus", "17")], "krun.cpus=17 is not 1 to 16"),
        ([*GOOD_DISK, ("krun.ram_mib", "64")], "krun.ram_mib=64 is below 128 (crun ignores it)"),
        ([*GOOD_DISK, ("krun.nested_virt", "yes")], "krun.nested_virt='yes' is not a number"),
        ([*GOOD_DISK, ("krun.disk.0.id", "x")], "krun.disk.0.id given twice"),
        (GOOD_DISK[1:], "run.oci.handler=krun is missing"),
    ],
    ids=["readonly-0", "index-01", "gap-0-2", "missing-id", "unsupported-field", "unknown-krun",
         "cpus-17", "ram-below-128", "nested-not-num", "duplicate", "no-handler"],
)  # fmt: skip
def test_the_validator_rejects(annotations: list[tuple[str, str]], problem: str) -> None:
    assert krun_problems(annotations) == [problem]


HOST = KrunHost(
    uid=1000, gid=1000, home=Path("/home/u"), cwd=Path("/src/app"),
    mem_total_kib=24 * 1024 * 1024, cpus=8, stdin_tty=False, stdout_tty=False,
)  # fmt: skip
ROOT = dataclasses.replace(HOST, uid=0, gid=0)
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
        "--annotation", "krun.disk.0.id=agentbox-nix", "--annotation", "krun.disk.0.readonly=false",
        "--annotation", "krun.disk.1.path=/s/ws/libkrun-containers.raw",
        "--annotation", "krun.disk.1.id=agentbox-containers",
        "--annotation", "krun.disk.1.readonly=false", "--annotation", "krun.use_passt=1",
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


def test_debug_is_podmans_own_log_level_and_the_guests() -> None:
    """--debug: podman's global --log-level=debug before the verb (RunSpec.debug, as every
    other podman call of the mode has it) and AGENTBOX_GUEST_DEBUG=1 for the guest init."""
    plain = plan_libkrun(REQ, HOST).run
    debug = plan_libkrun(dataclasses.replace(REQ, debug=True), HOST).run
    assert (debug.debug, debug.global_options) == (True, ())
    argv = plain.argv()
    at = argv.index("--volume")
    assert debug.argv() == [
        "podman", "--log-level=debug", *argv[1:at], "--env", "AGENTBOX_GUEST_DEBUG=1",
        *argv[at:],
    ]  # fmt: skip


def test_tsi_publish_mem_guest_init_and_root() -> None:
    tsi = plan_libkrun(dataclasses.replace(REQ, tsi=True, mem_gib=4), HOST).run
    assert ("no_proxy", "1") in tsi.env  # what the original passes for TSI (no krun.* of crun)
    assert not [k for k, _ in tsi.annotations if k in ("krun.use_passt", "krun.no_proxy")]
    assert ("AGENTBOX_LIBKRUN_USE_PASST", "1") not in tsi.env
    assert ("krun.ram_mib", "4096") in tsi.annotations
    with pytest.raises(UsageError, match="cannot be used with --tsi"):
        plan_libkrun(dataclasses.replace(REQ, tsi=True, publish=("80:80",)), HOST)
    published = plan_libkrun(dataclasses.replace(REQ, publish=("8080:80", "udp:53:53")), HOST)
    assert published.run.publish == ("8080:80", "udp:53:53")
    gi = plan_libkrun(dataclasses.replace(REQ, guest_init=Path("/b/gi"), root=True), HOST).run
    assert gi.mounts[-1].spec() == "/b/gi:/bin/agentbox-guest-init:ro"
    assert ("AGENTBOX_ENTER_AS_ROOT", "1") in gi.env


def test_as_root_the_task_runs_without_keep_id() -> None:
    """Rootful Podman 4.3 refuses keep-id ("keep-id is only supported in rootless mode"): as
    root the task runs as container mode's does, without --userns, entering as root and
    without AGENTBOX_HOST_* (dev cannot have uid 0)."""
    argv = plan_libkrun(REQ, ROOT).run.argv()
    assert argv[:12] == [
        "podman", "run", "--rm", "--interactive", "--name", "app-00112233aabbccdd",
        "--runtime", "crun", "--user", "0:0", "--hostname", "app-agentbox",
    ]  # fmt: skip
    envs = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    assert envs[:2] == ["AGENTBOX_ENTER_AS_ROOT=1", "AGENTBOX_KVM_DROP_TO_DEV=1"]
    assert not [e for e in envs if e.startswith("AGENTBOX_HOST_")]
    with_root_flag = plan_libkrun(dataclasses.replace(REQ, root=True), ROOT).run
    assert [e for e in with_root_flag.env if e[0] == "AGENTBOX_ENTER_AS_ROOT"] == [
        ("AGENTBOX_ENTER_AS_ROOT", "1")
    ]


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


def test_resize_guest_is_a_task_with_only_its_disk() -> None:
    """The one-shot guest of `libkrun resize`: a task's identity, VM size, passt, hostname and
    /tmp, only the target disk (as krun.disk.0) and its variables, the guest init's `libkrun
    resize` as the entrypoint, not interactive."""
    assert plan_resize(REQ, HOST, "containers").argv() == [
        "podman", "run", "--rm", "--name", "app-00112233aabbccdd-resize",
        "--runtime", "crun", "--userns", "keep-id", "--user", "0:0",
        "--hostname", "app-agentbox", "--entrypoint", "/bin/agentbox-guest-init",
        "--label", "agentbox.role=libkrun-resize",
        "--label", "agentbox.workspace=app-0123456789ab",
        "--annotation", "run.oci.handler=krun", "--annotation", "krun.ram_mib=19456",
        "--annotation", "krun.cpus=6",
        "--annotation", "krun.disk.0.path=/s/ws/libkrun-containers.raw",
        "--annotation", "krun.disk.0.id=agentbox-containers",
        "--annotation", "krun.disk.0.readonly=false", "--annotation", "krun.use_passt=1",
        "--env", "AGENTBOX_LIBKRUN_CONTAINERS_DISK_ID=agentbox-containers",
        "--env", "AGENTBOX_LIBKRUN_CONTAINERS_DISK_LABEL=AGENTBOX_CONTAINERS",
        "--env", "AGENTBOX_LIBKRUN_USE_PASST=1",
        "--tmpfs", "/tmp:rw,exec,mode=1777", "--device", "/dev/net/tun",
        "localhost/agentbox:latest", "libkrun", "resize", "--target", "containers",
    ]  # fmt: skip


def test_resize_guest_as_root_with_tsi_mem_guest_init_debug_and_profile() -> None:
    req = dataclasses.replace(REQ, tsi=True, mem_gib=2, guest_init=Path("/b/gi"), debug=True,
                              profile=True, command=())  # fmt: skip
    assert plan_resize(req, ROOT, "nix").argv() == [
        "podman", "--log-level=debug", "run", "--rm", "--name", "app-00112233aabbccdd-resize",
        "--runtime", "crun", "--user", "0:0",
        "--hostname", "app-agentbox", "--entrypoint", "/bin/agentbox-guest-init",
        "--label", "agentbox.role=libkrun-resize",
        "--label", "agentbox.workspace=app-0123456789ab",
        "--annotation", "run.oci.handler=krun", "--annotation", "krun.ram_mib=2048",
        "--annotation", "krun.cpus=6",
        "--annotation", "krun.disk.0.path=/s/ws/libkrun-nix.raw",
        "--annotation", "krun.disk.0.id=agentbox-nix",
        "--annotation", "krun.disk.0.readonly=false",
        "--env", "AGENTBOX_LIBKRUN_NIX_DISK_ID=agentbox-nix",
        "--env", "AGENTBOX_LIBKRUN_NIX_DISK_LABEL=AGENTBOX_NIX",
        "--env", "no_proxy=1", "--env", "AGENTBOX_GUEST_PROFILE=1",
        "--env", "AGENTBOX_GUEST_DEBUG=1",
        "--volume", "/b/gi:/bin/agentbox-guest-init:ro",
        "--tmpfs", "/tmp:rw,exec,mode=1777", "--device", "/dev/net/tun",
        "localhost/agentbox:latest", "libkrun", "resize", "--target", "nix",
    ]  # fmt: skip
    with pytest.raises(UsageError, match="--target 'swap' is not nix or containers"):
        plan_resize(REQ, HOST, "swap")


VARIANTS = {
    "default": (REQ, HOST),
    "root": (REQ, ROOT),
    "tsi": (dataclasses.replace(REQ, tsi=True), HOST),
    "mem-1": (dataclasses.replace(REQ, mem_gib=1), HOST),
    "mem-max": (dataclasses.replace(REQ, mem_gib=4096), HOST),
    "one-cpu": (REQ, dataclasses.replace(HOST, cpus=1)),
    "many-cpus": (REQ, dataclasses.replace(HOST, cpus=128)),
    "everything": (dataclasses.replace(REQ, publish=("8080:80",), guest_init=Path("/b/gi"),
                                       root=True, debug=True, profile=True), HOST),
}  # fmt: skip


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
@pytest.mark.parametrize("which", ["run", "resize-nix", "resize-containers"])
def test_every_plan_is_what_crun_accepts(variant: str, which: str) -> None:
    req, host = VARIANTS[variant]
    if which == "run":
        spec = plan_libkrun(req, host).run
    else:
        spec = plan_resize(dataclasses.replace(req, publish=()), host, which.split("-")[1])
    assert krun_problems(spec.annotations) == []
