"""``agentbox doctor``'s verdicts over given host facts (pure): whole lists of checks, the
modes they stop, the suggestion, the text table and the JSON against its schema."""

import errno
import json
from dataclasses import replace

import pytest

from agentbox_cli.container.storage_check import VFS_FIX
from agentbox_cli.doctor import checks
from agentbox_cli.doctor.checks import Check, DefaultMode, ModeVerdict, Suggestion
from agentbox_cli.doctor.probe import (
    Disks,
    HostFacts,
    Image,
    Libkrun,
    StateFs,
    SubIds,
)
from agentbox_krun.kvm import KvmFacts
from agentbox_state.subids import parse_sub_ids
from agentbox_testing.schemas import load_schema, problems

GIB = 1024**3
TOOLS = {
    "podman": "podman version 5.4.2", "buildah": "buildah version 1.39.3",
    "newuidmap": "usage: newuidmap <pid> ...",
    "newgidmap": "usage: newgidmap <pid> ...", "fuse-overlayfs": "fuse-overlayfs: version 1.14",
    "passt": "passt 2025_01_21", "slirp4netns": None, "btrfs": "btrfs-progs v6.14",
    "mkfs.btrfs": "mkfs.btrfs, part of btrfs-progs v6.14",
}  # fmt: skip
GOOD = HostFacts(
    user="u", uid=1000, tools=TOOLS,
    subuid=SubIds(path="/etc/subuid", ranges=((100000, 65536),)),
    subgid=SubIds(path="/etc/subgid", ranges=((100000, 65536),)),
    podman_info=("crun", "overlay"), podman_info_error=None,
    krun_handler="crun version 1.21", krun_problem=None,
    devices={"/dev/fuse": True, "/dev/net/tun": True},
    libkrun=Libkrun(soname="libkrun.so.1", file="/usr/lib/libkrun.so.1.11.2", error=None,
                    libkrunfw="libkrunfw.so.4", libkrunfw_beside=None),
    kvm=KvmFacts(device=True, open_errno=None, cpu_flags=frozenset({"vmx"}),
                 modules=frozenset({"kvm", "kvm_intel"})),
    state=StateFs(path="/home/u/.local/state/agentbox", fstype="btrfs",
                  options=("rw", "user_subvol_rm_allowed"),
                  auto=("btrfs-snapshot", "fuse-overlay"), auto_error=None),
    image=Image(ref="localhost/agentbox:latest", present=True, guest_init="0.1.0",
                created=1_000_000.0),
    guest_init_version="0.1.0",
    disks=Disks(where="/home/u/.local/state/agentbox", count=2, apparent=128 * GIB,
                allocated=3 * GIB, free=200 * GIB),
    now=1_000_000.0 + 2 * 86400,
)  # fmt: skip
VM, PODMAN = ["libkrun", "microvm"], ["libkrun", "container"]
PVM = KvmFacts(device=True, open_errno=None, cpu_flags=frozenset(),
               modules=frozenset({"kvm", "kvm_pvm"}))  # fmt: skip
PVM_REASON = ("/dev/kvm is served by kvm_pvm, a software hypervisor (no vmx/svm CPU flag, no "
              "kvm_intel/kvm_amd module): it boots no ordinary guest kernel")  # fmt: skip
KVM_HINT = ("`agentbox container` runs the same image without a VM; AGENTBOX_SKIP_KVM_CHECK=1 "
            "skips this check (for a guest kernel that does run here)")  # fmt: skip


def c(name: str, status: str, found: str, fix: str | None = None,
      needed_by: list[str] | None = None) -> Check:  # fmt: skip
    return Check(name=name, status=status, found=found, fix=fix, needed_by=needed_by or [])


def test_a_host_with_everything_passes_every_check() -> None:
    assert checks.all_checks(GOOD) == [
        c("podman", "ok", "podman version 5.4.2", None, PODMAN),
        c("buildah", "ok", "buildah version 1.39.3", None, ["microvm"]),
        c("subuid", "ok", "u: 100000-165535 (65536 ids)"),
        c("subgid", "ok", "u: 100000-165535 (65536 ids)"),
        c("newuidmap/newgidmap", "ok", "both installed", None, PODMAN),
        c("storage driver", "ok", "overlay"),
        c("fuse", "ok", "/dev/fuse, fuse-overlayfs: version 1.14", None, ["container"]),
        c("/dev/net/tun", "ok", "present", None, ["container"]),
        c("passt/slirp4netns", "ok", "passt: passt 2025_01_21", None, ["container"]),
        c("OCI runtime", "ok", "podman's default: crun"),
        c("crun +LIBKRUN", "ok", "crun version 1.21", None, ["libkrun"]),
        c("libkrun", "ok", "libkrun.so.1 loads /usr/lib/libkrun.so.1.11.2", None, ["microvm"]),
        c("libkrunfw", "ok", "libkrunfw.so.4 is found by name", None, ["microvm"]),
        c("/dev/kvm", "ok", "read-write, hardware-backed (vmx)", None, VM),
        c("btrfs-progs", "ok", "mkfs.btrfs, part of btrfs-progs v6.14", None, VM),
        c("state dir", "ok", "/home/u/.local/state/agentbox is on btrfs; auto uses "
          "btrfs-snapshot, then fuse-overlay"),
        c("image", "ok", "localhost/agentbox:latest, built 2 days ago"),
        c("image guest init", "ok", "0.1.0, as this agentbox's"),
        c("disk space", "ok", "200.0 GiB free at /home/u/.local/state/agentbox; 2 sparse disks "
          "of 128.0 GiB use 3.0 GiB"),
    ]  # fmt: skip
    assert [m.can_run for m in checks.verdicts(checks.all_checks(GOOD))] == [True, True, True]


def test_this_kind_of_host_fails_the_vm_modes_and_suggests_container_mode() -> None:
    """No crun, no libkrun, a kvm-pvm /dev/kvm, the state dir on ext4: what CI hosts look like."""
    host = replace(
        GOOD, krun_handler=None, krun_problem="crun is not installed",
        podman_info=("runc", "overlay"), kvm=PVM,
        libkrun=Libkrun(soname=None, file=None, error="cannot load libkrun; tried: libkrun.so.1",
                        libkrunfw=None, libkrunfw_beside=None),
        state=StateFs(path="/home/u/.local/state/agentbox", fstype="ext4", options=("rw",),
                      auto=("fuse-overlay",), auto_error=None),
    )  # fmt: skip
    found = [ch for ch in checks.all_checks(host) if ch.status != "ok"]
    assert found == [
        c("crun +LIBKRUN", "fail", "crun is not installed",
          "install crun built with libkrun (and libkrunfw)", ["libkrun"]),
        c("libkrun", "fail", "cannot load libkrun; tried: libkrun.so.1",
          "install libkrun, or set AGENTBOX_LIBKRUN_LIBRARY to its path", ["microvm"]),
        c("libkrunfw", "fail", "not looked for: libkrun does not load",
          "install libkrun and libkrunfw", ["microvm"]),
        c("/dev/kvm", "fail", PVM_REASON, KVM_HINT, VM),
        c("state dir", "warn", "/home/u/.local/state/agentbox is on ext4; auto uses fuse-overlay",
          "for btrfs snapshots, set [state] location to a dir on btrfs"),
    ]  # fmt: skip
    rep = checks.report(checks.all_checks(host), DefaultMode(mode="libkrun", source="default"),
                        "/home/u/.config/agentbox/agentbox.toml")  # fmt: skip
    assert rep.modes == [
        ModeVerdict(mode="libkrun", can_run=False,
                    reasons=["crun +LIBKRUN: crun is not installed", f"/dev/kvm: {PVM_REASON}"]),
        ModeVerdict(mode="container", can_run=True, reasons=[]),
        ModeVerdict(mode="microvm", can_run=False, reasons=[
            "libkrun: cannot load libkrun; tried: libkrun.so.1",
            "libkrunfw: not looked for: libkrun does not load", f"/dev/kvm: {PVM_REASON}"]),
    ]  # fmt: skip
    assert not rep.can_run_default
    assert rep.suggestion == Suggestion(
        mode="container", config_file="/home/u/.config/agentbox/agentbox.toml",
        lines=["[run]", 'mode = "container"'], env="AGENTBOX_MODE=container",
    )  # fmt: skip
    assert checks.render_text(rep).splitlines() == [
        "ok    podman               podman version 5.4.2",
        "ok    buildah              buildah version 1.39.3",
        "ok    subuid               u: 100000-165535 (65536 ids)",
        "ok    subgid               u: 100000-165535 (65536 ids)",
        "ok    newuidmap/newgidmap  both installed",
        "ok    storage driver       overlay",
        "ok    fuse                 /dev/fuse, fuse-overlayfs: version 1.14",
        "ok    /dev/net/tun         present",
        "ok    passt/slirp4netns    passt: passt 2025_01_21",
        "ok    OCI runtime          podman's default: runc",
        "fail  crun +LIBKRUN        crun is not installed",
        "                           fix: install crun built with libkrun (and libkrunfw)",
        "fail  libkrun              cannot load libkrun; tried: libkrun.so.1",
        "                           fix: install libkrun, or set AGENTBOX_LIBKRUN_LIBRARY to its "
        "path",
        "fail  libkrunfw            not looked for: libkrun does not load",
        "                           fix: install libkrun and libkrunfw",
        f"fail  /dev/kvm             {PVM_REASON}",
        f"                           fix: {KVM_HINT}",
        "ok    btrfs-progs          mkfs.btrfs, part of btrfs-progs v6.14",
        "warn  state dir            /home/u/.local/state/agentbox is on ext4; auto uses "
        "fuse-overlay",
        "                           fix: for btrfs snapshots, set [state] location to a dir on "
        "btrfs",
        "ok    image                localhost/agentbox:latest, built 2 days ago",
        "ok    image guest init     0.1.0, as this agentbox's",
        "ok    disk space           200.0 GiB free at /home/u/.local/state/agentbox; 2 sparse "
        "disks of 128.0 GiB use 3.0 GiB",
        "",
        "libkrun (the default): cannot run here (failed: crun +LIBKRUN, /dev/kvm)",
        "container: can run here",
        "microvm: cannot run here (failed: libkrun, libkrunfw, /dev/kvm)",
        "default mode: libkrun [default]",
        "libkrun cannot run here and container can: to make it what bare `agentbox` runs, put "
        "these lines in /home/u/.config/agentbox/agentbox.toml (or set AGENTBOX_MODE=container):",
        "    [run]",
        '    mode = "container"',
    ]  # fmt: skip


def test_a_default_that_runs_needs_no_suggestion_and_one_that_nothing_can_gets_none() -> None:
    runs = checks.report(checks.all_checks(GOOD), DefaultMode(mode="microvm", source="env X"), "/c")
    assert (runs.can_run_default, runs.suggestion) == (True, None)
    nothing = replace(GOOD, tools={**TOOLS, "podman": None, "buildah": None})
    rep = checks.report(checks.all_checks(nothing), DefaultMode(mode="libkrun", source="d"), "/c")
    assert [m.can_run for m in rep.modes] == [False, False, False]
    assert (rep.can_run_default, rep.suggestion) == (False, None)


def test_the_first_other_mode_that_can_run_is_suggested() -> None:
    no_podman = replace(GOOD, tools={**TOOLS, "podman": None})
    rep = checks.report(checks.all_checks(no_podman), DefaultMode(mode="container", source="d"),
                        "/c")  # fmt: skip
    assert rep.suggestion is not None
    assert rep.suggestion.mode == "microvm"


STALE = ('time="2026-12-02T04:54:26Z" level=error msg="invalid internal status, try resetting the '
         'pause process with \\"podman system migrate\\": cannot re-exec process to join the '
         'existing user namespace"')  # fmt: skip


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (replace(GOOD, podman_info=("crun", "vfs")),
         c("storage driver", "warn", "vfs (copies the whole image for every container)",
           VFS_FIX.removeprefix("agentbox: warning: "))),
        (replace(GOOD, podman_info=None, podman_info_error="Error: cannot set up namespace"),
         c("storage driver", "fail", "podman info failed: Error: cannot set up namespace",
           "run `podman info` and fix what it says", PODMAN)),
        # what rootless Podman prints once every process it recorded is gone (a killed session)
        (replace(GOOD, podman_info=None, podman_info_error=STALE),
         c("storage driver", "fail", f"podman info failed: {STALE}",
           "Podman's rootless state names processes that are gone: run `podman system migrate` "
           "(it marks their containers stopped), then retry", PODMAN)),
        (replace(GOOD, subuid=SubIds(path="/x/subuid", ranges=())),
         c("subuid", "fail", "no range for u in /x/subuid",
           "sudo usermod --add-subuids 100000-165535 u", PODMAN)),
        (replace(GOOD, subgid=SubIds(path="/x/subgid", ranges=((5, 10), (100, 90)))),
         c("subgid", "warn", "u: 5-14, 100-189 (100 ids; images may need 65536)",
           "sudo usermod --add-subgids 100000-165535 u")),
        (replace(GOOD, subuid=SubIds(path="/x/subuid", ranges=(), error="Permission denied")),
         c("subuid", "fail", "cannot read /x/subuid: Permission denied",
           "sudo usermod --add-subuids 100000-165535 u", PODMAN)),
        (replace(GOOD, uid=0, subuid=SubIds(path="/etc/subuid", ranges=())),
         c("subuid", "ok", "running as root: rootful Podman maps no subordinate ids")),
        (replace(GOOD, tools={**TOOLS, "newgidmap": None}),
         c("newuidmap/newgidmap", "fail", "newgidmap not installed", "apt-get install uidmap",
           PODMAN)),
        (replace(GOOD, devices={"/dev/fuse": False, "/dev/net/tun": True}),
         c("fuse", "fail", "/dev/fuse does not exist", "modprobe fuse", ["container"])),
        (replace(GOOD, tools={**TOOLS, "fuse-overlayfs": None}),
         c("fuse", "fail", "fuse-overlayfs is not installed", "apt-get install fuse-overlayfs",
           ["container"])),
        (replace(GOOD, devices={"/dev/fuse": True, "/dev/net/tun": False}),
         c("/dev/net/tun", "fail", "/dev/net/tun does not exist", "modprobe tun", ["container"])),
        (replace(GOOD, tools={**TOOLS, "passt": None}),
         c("passt/slirp4netns", "fail", "neither is installed",
           "apt-get install passt (or slirp4netns)", ["container"])),
        (replace(GOOD, krun_handler=None,
                 krun_problem="crun version 1.8 is built without libkrun"),
         c("crun +LIBKRUN", "fail", "crun version 1.8 is built without libkrun",
           "install crun built with libkrun (and libkrunfw)", ["libkrun"])),
        (replace(GOOD, libkrun=replace(GOOD.libkrun, libkrunfw=None,
                                       libkrunfw_beside="/opt/smol/libkrunfw.so.5")),
         c("libkrunfw", "fail", "/opt/smol/libkrunfw.so.5 exists, but libkrun opens it by name "
           "and the loader does not find it", "export LD_LIBRARY_PATH=/opt/smol", ["microvm"])),
        (replace(GOOD, kvm=replace(GOOD.kvm, open_errno=errno.EACCES)),
         c("/dev/kvm", "fail", "/dev/kvm cannot be opened read-write: EACCES (Permission denied)",
           "add yourself to the kvm group (sudo usermod -aG kvm $USER, then log in again); "
           + KVM_HINT, VM)),
        (replace(GOOD, tools={**TOOLS, "mkfs.btrfs": None}),
         c("btrfs-progs", "fail", "mkfs.btrfs is not installed", "apt-get install btrfs-progs",
           VM)),
        (replace(GOOD, state=replace(GOOD.state, options=("rw",))),
         c("state dir", "warn", "/home/u/.local/state/agentbox is on btrfs without "
           "user_subvol_rm_allowed; auto uses btrfs-snapshot, then fuse-overlay",
           "sudo mount -o remount,user_subvol_rm_allowed /home/u/.local/state/agentbox (and in "
           "/etc/fstab)")),
        (replace(GOOD, state=replace(GOOD.state, auto=(), auto_error="none usable")),
         c("state dir", "fail", "/home/u/.local/state/agentbox: no task root backend for auto: "
           "none usable", "put the state dir on btrfs, or install fuse-overlayfs", ["microvm"])),
        (replace(GOOD, image=replace(GOOD.image, present=False, guest_init=None, created=None)),
         c("image", "warn", "localhost/agentbox:latest is not in local storage",
           "agentbox image build")),
        (replace(GOOD, now=GOOD.now + 40 * 86400),
         c("image", "warn", "localhost/agentbox:latest, built 42 days ago",
           "agentbox image build (to pick up updates)")),
        (replace(GOOD, guest_init_version="0.2.0"),
         c("image guest init", "warn", "0.1.0 in the image, 0.2.0 in this agentbox",
           "agentbox image build")),
        (replace(GOOD, image=replace(GOOD.image, guest_init=None)),
         c("image guest init", "warn", "localhost/agentbox:latest has no "
           "agentbox.guest-init.version label (this agentbox has 0.1.0)", "agentbox image build")),
        (replace(GOOD, disks=replace(GOOD.disks, free=100 * GIB)),
         c("disk space", "warn", "100.0 GiB free at /home/u/.local/state/agentbox; 2 sparse "
           "disks of 128.0 GiB use 3.0 GiB (they may grow by 125.0 GiB)",
           "free space there, or move [state] location to a larger filesystem")),
    ],
    ids=["vfs", "podman-info", "podman-stale", "no-subuid", "short-subgid", "unreadable-subuid",
         "root-subuid",
         "newgidmap", "dev-fuse", "fuse-overlayfs", "tun", "network", "crun-no-krun",
         "libkrunfw-beside", "kvm-eacces", "btrfs-progs", "subvol-rm", "no-backend", "no-image",
         "stale-image", "guest-init", "no-label", "disk-space"],
)  # fmt: skip
def test_each_warn_and_fail(facts: HostFacts, expected: Check) -> None:
    got = [ch for ch in checks.all_checks(facts) if ch.name == expected.name]
    assert got == [expected]


def test_sub_id_lines_name_the_user_or_the_uid() -> None:
    text = "alice:100000:65536\n1000:200000:10\nbob:x:1\n#c\nu:300000:5\n"
    assert parse_sub_ids(text, "u", 1000) == ((200000, 10), (300000, 5))
    assert parse_sub_ids(text, "nobody", 7) == ()


def test_the_json_report_fits_its_schema_and_a_wrong_one_does_not() -> None:
    rep = checks.report(
        checks.all_checks(replace(GOOD, kvm=PVM)),
        DefaultMode(mode="libkrun", source="default"),
        "/c/agentbox.toml",
    )
    doc = json.loads(checks.render_json(rep))
    assert problems(doc, load_schema("agentbox_cli.doctor")) == []
    assert doc["suggestion"] == {"mode": "container", "config_file": "/c/agentbox.toml",
                                 "lines": ["[run]", 'mode = "container"'],
                                 "env": "AGENTBOX_MODE=container"}  # fmt: skip
    doc["checks"][0]["status"] = "bad"
    doc["extra"] = 1
    del doc["modes"][0]["reasons"]
    assert problems(doc, load_schema("agentbox_cli.doctor")) == [  # jsonschema's words
        "$: Additional properties are not allowed ('extra' was unexpected)",
        "$.checks[0].status: 'bad' is not one of ['ok', 'warn', 'fail']",
        "$.modes[0]: 'reasons' is a required property",
    ]


def test_the_schema_names_exactly_the_records_fields() -> None:
    from dataclasses import fields

    schema = load_schema("agentbox_cli.doctor")
    props = schema["properties"]
    assert list(props) == [f.name for f in fields(checks.DoctorReport)]
    for key, record in [("default_mode", DefaultMode), ("suggestion", Suggestion)]:
        assert list(props[key]["properties"]) == [f.name for f in fields(record)]
    assert list(props["checks"]["items"]["properties"]) == [f.name for f in fields(Check)]
    assert list(props["modes"]["items"]["properties"]) == [f.name for f in fields(ModeVerdict)]
