"""Read this host once for ``agentbox doctor``: tools and their versions (through the runner, so
a tool a test hides is missing here too), rootless set-up, devices, libkrun, KVM, the state
dir's filesystem, the image, and the sparse disks. Nothing is created or changed; no verdict
is made here (``checks`` judges these facts)."""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentbox_krun import kvm
from agentbox_krun.errors import KrunLoadError
from agentbox_krun.ffi import load
from agentbox_state.errors import AgentboxError, CommandError
from agentbox_state.runner import Runner
from agentbox_state.subids import parse_sub_ids

LIBRARY_ENV = "AGENTBOX_LIBKRUN_LIBRARY"
LIBKRUNFW_SONAMES = ("libkrunfw.so.5", "libkrunfw.so.4", "libkrunfw.so")
GUEST_INIT_LABEL = "agentbox.guest-init.version"
# each tool and how to ask it for its version (newuidmap/newgidmap have none: their usage)
TOOLS: dict[str, tuple[str, ...]] = {
    "podman": ("podman", "--version"),
    "buildah": ("buildah", "--version"),
    "newuidmap": ("newuidmap",),
    "newgidmap": ("newgidmap",),
    "fuse-overlayfs": ("fuse-overlayfs", "--version"),
    "passt": ("passt", "--version"),
    "slirp4netns": ("slirp4netns", "--version"),
    "btrfs": ("btrfs", "--version"),
    "mkfs.btrfs": ("mkfs.btrfs", "--version"),
}
DEVICES = ("/dev/fuse", "/dev/net/tun")


@dataclass(frozen=True, slots=True, kw_only=True)
class SubIds:
    """The user's ranges in /etc/subuid or /etc/subgid (``error``: the file could not be read)."""

    path: str
    ranges: tuple[tuple[int, int], ...]  # (first id, count)
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Libkrun:
    soname: str | None  # the name it was loaded by (None: not loadable)
    file: str | None  # the file that name resolved to
    error: str | None  # why it did not load
    libkrunfw: str | None  # the libkrunfw soname the loader finds by name
    libkrunfw_beside: str | None  # a libkrunfw file next to libkrun (found only by path)


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    ref: str
    present: bool
    guest_init: str | None  # its agentbox.guest-init.version label
    created: float | None  # seconds since the epoch
    error: str | None = None  # podman could not say (not "absent")


@dataclass(frozen=True, slots=True, kw_only=True)
class Disks:
    where: str  # the state base (or its nearest existing parent)
    count: int
    apparent: int  # bytes the sparse disks may grow to
    allocated: int  # bytes they use now
    free: int  # bytes free there for an ordinary user


@dataclass(frozen=True, slots=True, kw_only=True)
class StateFs:
    path: str  # the state base, or its nearest existing parent
    fstype: str | None
    options: tuple[str, ...]  # its mount options (findmnt)
    auto: tuple[str, ...]  # the task root backends `auto` would try, in order
    auto_error: str | None  # why `auto` has none


@dataclass(frozen=True, slots=True, kw_only=True)
class HostFacts:
    user: str
    uid: int
    tools: Mapping[str, str | None]  # tool -> the first line it printed; None: not installed
    subuid: SubIds
    subgid: SubIds
    podman_info: tuple[str, str] | None  # (OCI runtime, storage driver); None: podman info failed
    podman_info_error: str | None
    krun_handler: str | None  # crun's version line when it has the krun handler
    krun_problem: str | None  # else why not (libkrun mode's own refusal)
    devices: Mapping[str, bool]
    libkrun: Libkrun
    kvm: kvm.KvmFacts
    state: StateFs
    image: Image
    guest_init_version: str  # the guest init this agentbox builds images with
    disks: Disks
    now: float


def existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def tool_line(runner: Runner, argv: tuple[str, ...]) -> str | None:
    try:
        done = runner.run(list(argv), check=False)
    except CommandError:  # not installed (or not startable)
        return None
    lines = [line.strip() for line in (done.stdout + "\n" + done.stderr).splitlines()]
    lines = [line for line in lines if line]
    named = [line for line in lines if argv[0] in line]  # fuse-overlayfs prints FUSE's first
    return (named or lines or [argv[0]])[0]


def sub_ids(path: str, user: str, uid: int) -> SubIds:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as err:
        return SubIds(path=path, ranges=(), error=err.strerror or str(err))
    return SubIds(path=path, ranges=parse_sub_ids(text, user, uid))


def podman_info(runner: Runner) -> tuple[tuple[str, str] | None, str | None]:
    argv = ["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}\t{{.Store.GraphDriverName}}"]
    try:
        done = runner.run(argv)
    except CommandError as err:
        tail = err.stderr_tail.strip().splitlines()
        return None, tail[-1] if tail else err.message
    runtime, _, driver = done.stdout.strip().partition("\t")
    return (runtime, driver), None


def krun_handler(runner: Runner) -> tuple[str | None, str | None]:
    """libkrun mode's own check of crun (its version line, or why it has no krun handler)."""
    from agentbox_cli.libkrun.handler import UNAVAILABLE, KrunUnavailableError, check_krun_handler

    try:
        return check_krun_handler(runner), None
    except KrunUnavailableError as err:
        return None, err.message.removeprefix(UNAVAILABLE)


def _mapped_file(fragment: str) -> str | None:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                path = line.split(maxsplit=5)[-1].strip()
                if path.startswith("/") and fragment in os.path.basename(path):
                    return path
    except OSError:
        pass
    return None


def libkrun(environ: Mapping[str, str]) -> Libkrun:
    try:
        lib = load(environ, LIBRARY_ENV)
    except KrunLoadError as err:
        return Libkrun(soname=None, file=None, error=err.message, libkrunfw=None,
                       libkrunfw_beside=None)  # fmt: skip
    file = _mapped_file("libkrun.so") or lib.name
    found = None
    for name in LIBKRUNFW_SONAMES:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        found = name
        break
    beside = next(
        (os.path.join(os.path.dirname(file), n) for n in LIBKRUNFW_SONAMES
         if os.path.exists(os.path.join(os.path.dirname(file), n))),
        None,
    )  # fmt: skip
    return Libkrun(soname=lib.name, file=file, error=None, libkrunfw=found,
                   libkrunfw_beside=beside)  # fmt: skip


def state_fs(base: Path, images: Path, runner: Runner, tools: Mapping[str, str | None]) -> StateFs:
    from agentbox_storage import argv, taskroot
    from agentbox_storage.backends import Backend

    where = existing(base)
    fstype: str | None = None
    options: tuple[str, ...] = ()
    done = runner.run(argv.findmnt_options(where), check=False)
    fields = done.stdout.split()
    if done.returncode == 0 and len(fields) == 4:
        fstype, options = fields[2], tuple(fields[3].split(","))
    try:  # `auto` asks for btrfs and fuse-overlayfs: found (or hidden) as the probe found them
        auto = taskroot.select(
            Backend.AUTO, existing(images), which=lambda name: name if tools.get(name) else None
        )
    except AgentboxError as err:
        return StateFs(path=os.fspath(where), fstype=fstype, options=options, auto=(),
                       auto_error=err.message)  # fmt: skip
    return StateFs(path=os.fspath(where), fstype=fstype, options=options,
                   auto=tuple(b.value for b in auto), auto_error=None)  # fmt: skip


def image(ref: str, runner: Runner) -> Image:
    fmt = f'{{{{index .Labels "{GUEST_INIT_LABEL}"}}}}\t{{{{.Created.Unix}}}}'
    try:
        done = runner.run(["podman", "image", "inspect", "--format", fmt, ref], check=False)
    except CommandError as err:
        return Image(ref=ref, present=False, guest_init=None, created=None, error=err.message)
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        known = any("image not known" in s or "no such image" in s.lower() for s in said)
        return Image(ref=ref, present=False, guest_init=None, created=None,
                     error=None if known else (said[-1] if said else "podman failed"))  # fmt: skip
    label, _, created = done.stdout.strip().partition("\t")
    return Image(ref=ref, present=True, guest_init=label if label not in ("", "<no value>")
                 else None, created=float(created) if created.isdigit() else None)  # fmt: skip


def disks(base: Path) -> Disks:
    """The sparse disk files (``*.raw``) in every project's state dir under ``base``."""
    count = apparent = allocated = 0
    workspaces = base / "workspaces"
    if workspaces.is_dir():
        for project in workspaces.iterdir():
            for disk in project.glob("*.raw") if project.is_dir() else ():
                st = disk.stat()
                count, apparent, allocated = (
                    count + 1,
                    apparent + st.st_size,
                    allocated + (st.st_blocks * 512),
                )
    where = existing(base)
    vfs = os.statvfs(where)
    return Disks(where=os.fspath(where), count=count, apparent=apparent, allocated=allocated,
                 free=vfs.f_bavail * vfs.f_frsize)  # fmt: skip


def probe_host(
    runner: Runner,
    environ: Mapping[str, str],
    *,
    base: Path,
    images: Path,
    image_ref: str,
    guest_init_version: str,
    subuid_path: str = "/etc/subuid",
    subgid_path: str = "/etc/subgid",
) -> HostFacts:
    import pwd

    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = environ.get("USER", str(uid))
    tools = {name: tool_line(runner, argv) for name, argv in TOOLS.items()}
    handler, handler_problem = krun_handler(runner)
    info, info_error = podman_info(runner) if tools["podman"] else (None, "podman is missing")
    return HostFacts(
        user=user,
        uid=uid,
        tools=tools,
        subuid=sub_ids(subuid_path, user, uid),
        subgid=sub_ids(subgid_path, user, uid),
        podman_info=info,
        podman_info_error=info_error,
        krun_handler=handler,
        krun_problem=handler_problem,
        devices={d: os.path.exists(d) for d in DEVICES},
        libkrun=libkrun(environ),
        kvm=kvm.probe(),
        state=state_fs(base, images, runner, tools),
        image=image(image_ref, runner)
        if tools["podman"]
        else Image(
            ref=image_ref, present=False, guest_init=None, created=None, error="podman is missing"
        ),
        guest_init_version=guest_init_version,
        disks=disks(base),
        now=time.time(),
    )
