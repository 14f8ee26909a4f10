"""``agentbox doctor``'s verdicts (pure): each check judges probed host facts into a record
(name, ok / warn / fail, what was found, a one-line fix, and the modes a fail stops); the modes
are judged from the checks; the report is the documented ``--json`` structure.

A ``fail`` stops exactly the modes in its ``needed_by``; a ``warn`` stops nothing (it says what
is slower, stale or about to run out); ``ok`` says what was found.

The records are plain dataclasses and ``--json`` is their ``asdict`` (doctor must work where
only the standard library is installed next to agentbox); ``schema.json`` beside this module
is the documented JSON Schema of that output, checked against these fields by the tests.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from agentbox_cli.container.storage_check import VFS_FIX
from agentbox_cli.doctor.probe import HostFacts, SubIds
from agentbox_cli.schema import MODES
from agentbox_krun import kvm
from agentbox_state.runner import known_remedy

SCHEMA = "agentbox-doctor/1"
OK, WARN, FAIL = "ok", "warn", "fail"
LIBKRUN, CONTAINER, MICROVM = MODES
PODMAN_MODES = (LIBKRUN, CONTAINER)
VM_MODES = (LIBKRUN, MICROVM)
SUBID_COUNT = 65536  # what rootless Podman maps for an ordinary image (uid 0..65535)
IMAGE_STALE_DAYS = 30
GIB = 1024**3
KVM_SKIP = "AGENTBOX_" + kvm.SKIP_SUFFIX


@dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    status: str  # ok, warn or fail
    found: str
    fix: str | None  # one line; None when there is nothing to do
    needed_by: list[str]  # the modes a fail stops


@dataclass(frozen=True, kw_only=True)
class ModeVerdict:
    mode: str
    can_run: bool
    reasons: list[str]  # "<check>: <found>" of each failed check it needs


@dataclass(frozen=True, kw_only=True)
class Suggestion:
    """Another mode that can run here, and the lines that make it the default."""

    mode: str
    config_file: str
    lines: list[str]
    env: str


@dataclass(frozen=True, kw_only=True)
class DefaultMode:
    mode: str
    source: str  # "default", "env AGENTBOX_MODE" or "<file> [run].mode"


@dataclass(frozen=True, kw_only=True)
class DoctorReport:
    """``agentbox doctor --json``."""

    schema: str
    default_mode: DefaultMode
    can_run_default: bool
    checks: list[Check]
    modes: list[ModeVerdict]
    suggestion: Suggestion | None


def check(name: str, status: str, found: str, fix: str | None = None,
          needed_by: tuple[str, ...] = ()) -> Check:  # fmt: skip
    return Check(name=name, status=status, found=found, fix=fix, needed_by=list(needed_by))


def tool(facts: HostFacts, name: str, modes: tuple[str, ...], package: str) -> Check:
    line = facts.tools.get(name)
    if line is None:
        return check(name, FAIL, f"{name} is not installed", f"apt-get install {package}", modes)
    return check(name, OK, line, None, modes)


def _rootless(facts: HostFacts) -> bool:
    return facts.uid != 0


def sub_ids(facts: HostFacts, ids: SubIds, what: str) -> Check:
    name = f"sub{what}"
    if not _rootless(facts):
        return check(name, OK, "running as root: rootful Podman maps no subordinate ids")
    fix = f"sudo usermod --add-sub{what}s 100000-165535 {facts.user}"
    if ids.error is not None:
        return check(name, FAIL, f"cannot read {ids.path}: {ids.error}", fix, PODMAN_MODES)
    if not ids.ranges:
        return check(name, FAIL, f"no range for {facts.user} in {ids.path}", fix, PODMAN_MODES)
    shown = ", ".join(f"{first}-{first + count - 1}" for first, count in ids.ranges)
    total = sum(count for _, count in ids.ranges)
    if total < SUBID_COUNT:
        return check(name, WARN, f"{facts.user}: {shown} ({total} ids; images may need "
                     f"{SUBID_COUNT})", fix)  # fmt: skip
    return check(name, OK, f"{facts.user}: {shown} ({total} ids)")


def id_mappers(facts: HostFacts) -> Check:
    missing = [t for t in ("newuidmap", "newgidmap") if facts.tools.get(t) is None]
    name = "newuidmap/newgidmap"
    if not missing:
        return check(name, OK, "both installed", None, PODMAN_MODES if _rootless(facts) else ())
    found = f"{' and '.join(missing)} not installed"
    if not _rootless(facts):
        return check(name, OK, f"{found} (not needed as root)")
    return check(name, FAIL, found, "apt-get install uidmap", PODMAN_MODES)


def storage_driver(facts: HostFacts) -> Check:
    name = "storage driver"
    if facts.podman_info is None:
        error = facts.podman_info_error or ""
        fix = known_remedy(error) or "run `podman info` and fix what it says"
        return check(name, FAIL, f"podman info failed: {error}", fix, PODMAN_MODES)
    driver = facts.podman_info[1]
    if driver == "vfs":
        fix = VFS_FIX.removeprefix("agentbox: warning: ")
        return check(name, WARN, "vfs (copies the whole image for every container)", fix)
    return check(name, OK, driver)


def fuse(facts: HostFacts) -> Check:
    missing = []
    if not facts.devices["/dev/fuse"]:
        missing.append("/dev/fuse does not exist")
    if facts.tools.get("fuse-overlayfs") is None:
        missing.append("fuse-overlayfs is not installed")
    if missing:
        fix = "apt-get install fuse-overlayfs" if facts.devices["/dev/fuse"] else "modprobe fuse"
        return check("fuse", FAIL, "; ".join(missing), fix, (CONTAINER,))
    return check("fuse", OK, f"/dev/fuse, {facts.tools['fuse-overlayfs']}", None, (CONTAINER,))


def tun(facts: HostFacts) -> Check:
    modes = (CONTAINER,) if _rootless(facts) else ()
    if facts.devices["/dev/net/tun"]:
        return check("/dev/net/tun", OK, "present", None, modes)
    return check("/dev/net/tun", FAIL if modes else WARN, "/dev/net/tun does not exist",
                 "modprobe tun", modes)  # fmt: skip


def network(facts: HostFacts) -> Check:
    modes = (CONTAINER,) if _rootless(facts) else ()
    found = [f"{t}: {facts.tools[t]}" for t in ("passt", "slirp4netns") if facts.tools.get(t)]
    if found:
        return check("passt/slirp4netns", OK, "; ".join(found), None, modes)
    return check("passt/slirp4netns", FAIL if modes else WARN, "neither is installed",
                 "apt-get install passt (or slirp4netns)", modes)  # fmt: skip


def oci_runtime(facts: HostFacts) -> Check:
    if facts.podman_info is None:
        return check("OCI runtime", WARN, "unknown (podman info failed)")
    return check("OCI runtime", OK, f"podman's default: {facts.podman_info[0]}")


def krun_handler(facts: HostFacts) -> Check:
    name, fix = "crun +LIBKRUN", "install crun built with libkrun (and libkrunfw)"
    if facts.krun_handler is None:
        return check(name, FAIL, facts.krun_problem or "unknown", fix, (LIBKRUN,))
    return check(name, OK, facts.krun_handler, None, (LIBKRUN,))


def libkrun_library(facts: HostFacts) -> Check:
    lib = facts.libkrun
    if lib.soname is None:
        return check(
            "libkrun",
            FAIL,
            lib.error or "not loadable",
            "install libkrun, or set AGENTBOX_LIBKRUN_LIBRARY to its path",
            (MICROVM,),
        )
    return check("libkrun", OK, f"{lib.soname} loads {lib.file}", None, (MICROVM,))


def libkrunfw(facts: HostFacts) -> Check:
    lib = facts.libkrun
    if lib.soname is None:
        return check("libkrunfw", FAIL, "not looked for: libkrun does not load",
                     "install libkrun and libkrunfw", (MICROVM,))  # fmt: skip
    if lib.libkrunfw is not None:
        return check("libkrunfw", OK, f"{lib.libkrunfw} is found by name", None, (MICROVM,))
    if lib.libkrunfw_beside is not None:
        where = lib.libkrunfw_beside.rpartition("/")[0]
        return check("libkrunfw", FAIL, f"{lib.libkrunfw_beside} exists, but libkrun opens it "
                     "by name and the loader does not find it", f"export LD_LIBRARY_PATH={where}",
                     (MICROVM,))  # fmt: skip
    return check("libkrunfw", FAIL, "no libkrunfw.so.N is found by name",
                 "install libkrunfw", (MICROVM,))  # fmt: skip


def kvm_device(facts: HostFacts) -> Check:
    reason = kvm.problem(facts.kvm)
    if reason is None:
        flags = ", ".join(sorted(facts.kvm.cpu_flags)) or "a hardware KVM module"
        return check("/dev/kvm", OK, f"read-write, hardware-backed ({flags})", None, VM_MODES)
    return check("/dev/kvm", FAIL, reason, kvm.hint(facts.kvm, KVM_SKIP), VM_MODES)


def btrfs_progs(facts: HostFacts) -> Check:
    line = facts.tools.get("mkfs.btrfs")
    found = line if line is not None else "mkfs.btrfs is not installed"
    if line is None or facts.tools.get("btrfs") is None:
        return check("btrfs-progs", FAIL, found, "apt-get install btrfs-progs", VM_MODES)
    return check("btrfs-progs", OK, line, None, VM_MODES)


def state_dir(facts: HostFacts) -> Check:
    st = facts.state
    name = "state dir"
    auto = f"auto uses {', then '.join(st.auto)}" if st.auto else ""
    if not st.auto:
        return check(
            name,
            FAIL,
            f"{st.path}: no task root backend for auto: {st.auto_error}",
            "put the state dir on btrfs, or install fuse-overlayfs",
            (MICROVM,),
        )
    on = f"{st.path} is on {st.fstype or 'an unknown filesystem'}"
    if st.fstype != "btrfs":
        return check(
            name,
            WARN,
            f"{on}; {auto}",
            "for btrfs snapshots, set [state] location to a dir on btrfs",
        )
    if _rootless(facts) and "user_subvol_rm_allowed" not in st.options:
        return check(name, WARN, f"{on} without user_subvol_rm_allowed; {auto}",
                     f"sudo mount -o remount,user_subvol_rm_allowed {st.path} (and in "
                     "/etc/fstab)")  # fmt: skip
    return check(name, OK, f"{on}; {auto}")


def image(facts: HostFacts) -> Check:
    img = facts.image
    if img.error is not None:
        return check("image", WARN, f"{img.ref}: {img.error}", "agentbox image build")
    if not img.present:
        return check("image", WARN, f"{img.ref} is not in local storage", "agentbox image build")
    if img.created is None:
        return check("image", OK, f"{img.ref} (age unknown)")
    days = max(0, int((facts.now - img.created) // 86400))
    found = f"{img.ref}, built {days} day{'s' if days != 1 else ''} ago"
    if days > IMAGE_STALE_DAYS:
        return check("image", WARN, found, "agentbox image build (to pick up updates)")
    return check("image", OK, found)


def guest_init(facts: HostFacts) -> Check:
    img, ours = facts.image, facts.guest_init_version
    name = "image guest init"
    if not img.present:
        return check(name, WARN, "no image to look in", "agentbox image build")
    if img.guest_init is None:
        return check(name, WARN, f"{img.ref} has no agentbox.guest-init.version label (this "
                     f"agentbox has {ours})", "agentbox image build")  # fmt: skip
    if img.guest_init != ours:
        return check(name, WARN, f"{img.guest_init} in the image, {ours} in this agentbox",
                     "agentbox image build")  # fmt: skip
    return check(name, OK, f"{ours}, as this agentbox's")


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def disk_space(facts: HostFacts) -> Check:
    d = facts.disks
    name = "disk space"
    if d.count == 0:
        return check(name, OK, f"{_gib(d.free)} free at {d.where}; no disks yet")
    growth = d.apparent - d.allocated
    found = (f"{_gib(d.free)} free at {d.where}; {d.count} sparse disks of {_gib(d.apparent)} "
             f"use {_gib(d.allocated)}")  # fmt: skip
    if d.free < growth:
        return check(
            name,
            WARN,
            f"{found} (they may grow by {_gib(growth)})",
            "free space there, or move [state] location to a larger filesystem",
        )
    return check(name, OK, found)


def all_checks(facts: HostFacts) -> list[Check]:
    """Every check, in the order shown (pure)."""
    return [
        tool(facts, "podman", PODMAN_MODES, "podman"),
        tool(facts, "buildah", (MICROVM,), "buildah"),
        sub_ids(facts, facts.subuid, "uid"),
        sub_ids(facts, facts.subgid, "gid"),
        id_mappers(facts),
        storage_driver(facts),
        fuse(facts),
        tun(facts),
        network(facts),
        oci_runtime(facts),
        krun_handler(facts),
        libkrun_library(facts),
        libkrunfw(facts),
        kvm_device(facts),
        btrfs_progs(facts),
        state_dir(facts),
        image(facts),
        guest_init(facts),
        disk_space(facts),
    ]


def verdicts(checks: list[Check]) -> list[ModeVerdict]:
    """Each mode: it can run unless a check it needs failed (pure)."""
    out = []
    for mode in MODES:
        reasons = [f"{c.name}: {c.found}" for c in checks
                   if c.status == FAIL and mode in c.needed_by]  # fmt: skip
        out.append(ModeVerdict(mode=mode, can_run=not reasons, reasons=reasons))
    return out


def config_lines(mode: str) -> list[str]:
    return ["[run]", f'mode = "{mode}"']


def report(checks: list[Check], default: DefaultMode, config_file: str) -> DoctorReport:
    """The whole report: a suggestion only when the default mode cannot run and another can
    (the first of MODES' order); never chosen for the user (pure)."""
    modes = verdicts(checks)
    can = {m.mode: m.can_run for m in modes}
    suggestion = None
    if not can[default.mode]:
        other = next((m for m in MODES if can[m] and m != default.mode), None)
        if other is not None:
            suggestion = Suggestion(
                mode=other,
                config_file=config_file,
                lines=config_lines(other),
                env=f"AGENTBOX_MODE={other}",
            )
    return DoctorReport(schema=SCHEMA, default_mode=default, can_run_default=can[default.mode],
                        checks=checks, modes=modes, suggestion=suggestion)  # fmt: skip


def render_text(rep: DoctorReport) -> str:
    """The human table: one row per check (its fix below it), then the modes and the way out."""
    width = max(len(c.name) for c in rep.checks)
    lines = []
    for c in rep.checks:
        lines.append(f"{c.status:<4}  {c.name:<{width}}  {c.found}")
        if c.fix and c.status != OK:
            indent = " " * (width + 8)  # under "found"
            first, *rest = c.fix.splitlines()
            lines.append(f"{indent}fix: {first}")
            lines.extend(f"{indent}     {line}" for line in rest)
    lines.append("")
    for m in rep.modes:
        default = " (the default)" if m.mode == rep.default_mode.mode else ""
        if m.can_run:
            lines.append(f"{m.mode}{default}: can run here")
        else:
            failed = [c.name for c in rep.checks if c.status == FAIL and m.mode in c.needed_by]
            lines.append(f"{m.mode}{default}: cannot run here (failed: {', '.join(failed)})")
    lines.append(f"default mode: {rep.default_mode.mode} [{rep.default_mode.source}]")
    if rep.suggestion is not None:
        s = rep.suggestion
        lines.append(f"{rep.default_mode.mode} cannot run here and {s.mode} can: to make it "
                     f"what bare `agentbox` runs, put these lines in {s.config_file} (or set "
                     f"{s.env}):")  # fmt: skip
        lines.extend(f"    {line}" for line in s.lines)
    return "\n".join(lines)


def render_json(rep: DoctorReport) -> str:
    return json.dumps(asdict(rep), indent=2)
