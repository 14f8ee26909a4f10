"""The enter flows: container, libkrun, microvm (and loftd's), each ending in exec."""

from __future__ import annotations

import errno
import os
import sys

from agentbox_guest_init import home, identity
from agentbox_guest_init.contract import Contract, ContractError, GuestError
from agentbox_guest_init.profile import Profile
from agentbox_guest_init.shellenv import BASE_PATH, shell_env

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_COMMAND = ["fish", "-l"]
PASST_DNS = "169.254.1.1"


def resolve_ids(contract: Contract, euid: int) -> tuple[int, int]:
    """Who the user's command runs as: the host's ids for dev (required when we start as root),
    root with enter-as-root, else whoever we already are."""
    if euid != 0:
        return euid, os.getegid()
    if contract.enter_as_root:
        return 0, 0
    uid, gid = contract.host_uid, contract.host_gid
    if uid is None or gid is None:
        raise ContractError(
            f"{contract.var('HOST_UID')} and {contract.var('HOST_GID')} are required when the "
            "guest init starts as root"
        )
    if uid == 0 or gid == 0:
        raise ContractError(
            f"{contract.var('HOST_UID')}/{contract.var('HOST_GID')} must not be 0 (dev is not root)"
        )
    return uid, gid


def resolv_conf_with(text: str, nameserver: str) -> str:
    """``nameserver`` first, once; the other lines kept in order (pure)."""
    first = f"nameserver {nameserver}"
    return "\n".join([first, *(ln for ln in text.splitlines() if ln.strip() != first)]) + "\n"


def _rewrite(path: str, change: Callable[[str], str]) -> None:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    new = change(text)
    if new == text:
        return
    tmp = f"{path}.agentbox-tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(new)
    os.chmod(tmp, 0o644)
    try:
        os.replace(tmp, path)  # atomic where the file is an ordinary one
    except OSError as err:
        os.unlink(tmp)
        if err.errno not in (errno.EBUSY, errno.EXDEV):
            raise
        with open(path, "w", encoding="utf-8") as f:  # a bind mount (podman's /etc/resolv.conf)
            f.write(new)


def prepare_identity(contract: Contract, uid: int, gid: int, shell: str, prof: Profile) -> None:
    """As root: the dev user, its home and runtime dir, /dev/kvm, dmesg_restrict."""
    from agentbox_guest_init.sysctl import write_sysctl

    dev_uid = contract.host_uid if uid == 0 else uid
    dev_gid = contract.host_gid if gid == 0 else gid
    if dev_uid is not None and dev_gid is not None and dev_uid != 0:
        prof.step("materialize-user")
        _rewrite("/etc/passwd", lambda t: identity.passwd_with_dev(t, dev_uid, dev_gid, shell))
        _rewrite("/etc/group", lambda t: identity.group_with_dev(t, dev_gid))
        prof.step("materialize-home")
        home.materialize("/", dev_uid, dev_gid, home.home_dirs())
        home.runtime_dir("/", dev_uid, dev_gid)
    if uid == 0:
        home.materialize("/", 0, 0, home.home_dirs("/root")[1:])
        home.runtime_dir("/", 0, 0)
    prof.step("restrict-dmesg")
    write_sysctl("/", "kernel.dmesg_restrict", "1")
    if os.path.exists("/dev/kvm"):
        os.chmod("/dev/kvm", 0o666)


def exec_command(
    cmd: list[str], contract: Contract, uid: int, gid: int, env: dict[str, str], prof: Profile
) -> None:
    """Report the profile, drop to ``uid``/``gid`` if needed, and replace this process.

    As PID 1 (a container's first process) we do not exec: the kernel ignores SIGTERM for a
    PID 1 without a handler, so ``podman stop`` or a forwarded Ctrl-C would not reach the
    command, and orphans would never be reaped. There we fork the command, pass signals on,
    reap every child and exit with the command's status. With a status file (the VM modes) we
    fork too, and report to the host that the command started and how it ended."""
    prof.step("exec")
    prof.emit()
    if contract.status_file:  # the VM modes: the host learns how the command ended
        from agentbox_guest_init import report

        report.write(contract.status_file, report.STARTED, prof.prog)
        status = supervise(lambda: _become(cmd, uid, gid, env))
        report.write(contract.status_file, report.exited(status), prof.prog)
        sys.exit(status)
    if os.getpid() == 1:
        sys.exit(supervise(lambda: _become(cmd, uid, gid, env)))
    _become(cmd, uid, gid, env)


def _become(cmd: list[str], uid: int, gid: int, env: dict[str, str]) -> None:
    if os.geteuid() == 0 and uid != 0:
        with open("/etc/group", encoding="utf-8") as f:
            groups = identity.supplementary_groups(f.read(), identity.DEV, gid)
        identity.drop_privileges(uid, gid, groups)
    try:
        os.execvpe(cmd[0], cmd, env)
    except FileNotFoundError:
        raise GuestError(f"{cmd[0]}: command not found", code=127) from None
    except PermissionError:
        raise GuestError(f"{cmd[0]}: permission denied", code=126) from None


FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH")


def supervise(start: Callable[[], None]) -> int:
    """Fork ``start`` (which execs), forward signals to it, reap all children; its status."""
    import signal

    child = os.fork()
    if child == 0:
        for name in FORWARDED:
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        try:
            start()
        except GuestError as err:
            print(f"agentbox-guest-init: {err.reason}", file=sys.stderr)
            os._exit(err.code)
        os._exit(127)  # pragma: no cover - start() execs or raises

    def forward(signum: int, _frame: object) -> None:
        try:  # noqa: SIM105 - contextlib is not worth its import on the start-up path
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for name in FORWARDED:
        signal.signal(getattr(signal, name), forward)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        if pid == child:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else \
                128 + os.WTERMSIG(status)  # fmt: skip


def enter(section: str, contract: Contract, cmd: list[str], *, libkrun: bool,
          prog: str = "agentbox-guest-init") -> None:  # fmt: skip
    """Prepare and exec ``cmd`` (default ``fish -l``). Never returns on success."""
    prof = Profile(section, enabled=contract.profile and contract.debug, prog=prog)
    prof.step("resolve-identity")
    cmd = cmd or DEFAULT_COMMAND
    uid, gid = resolve_ids(contract, os.geteuid())
    from agentbox_guest_init.sysctl import which

    shell = which(cmd[0], os.environ.get("PATH") or BASE_PATH) or "/bin/sh"
    if os.geteuid() == 0:
        prepare_identity(contract, uid, gid, shell, prof)
    else:
        prof.step("fill-home")
        missing = home.fill_own("/", uid, home.home_dirs())
        if missing is not None:
            print(f"agentbox-guest-init: cannot create {missing} as uid {uid}; programs that "
                  "write there will fail", file=sys.stderr)  # fmt: skip
    nix_daemon = False
    if libkrun and os.geteuid() == 0:
        nix_daemon = _libkrun_prep(contract, prof)
    prof.step("derive-shell-env")
    env = shell_env(os.environ, uid=uid, as_root=uid == 0, shell=shell,
                    containers_storage=libkrun and contract.containers_storage,
                    nix_daemon=nix_daemon or "NIX_REMOTE" in os.environ)  # fmt: skip
    if "NIX_REMOTE" in os.environ:
        env["NIX_REMOTE"] = os.environ["NIX_REMOTE"]
    if (contract.nix_daemon_starting or contract.nix_daemon_off) and not libkrun:
        prof.step("nix-wait-wrappers")
        _wait_for_nix(env, off=contract.nix_daemon_off)
    if contract.egress_socket and not libkrun:
        from agentbox_guest_init import egress

        prof.step("egress-relay")
        egress.start(contract.egress_socket)  # listening before the command starts
    exec_command(cmd, contract, uid, gid, env, prof)


def _wait_for_nix(env: dict[str, str], *, off: bool) -> None:
    """Put the Nix clients' wait wrappers (``off``: the ones that say there is no daemon)
    first on ``env``'s PATH: under /run as root, in the dev user's cache otherwise; where that
    cannot be written, say so and go on without."""
    from agentbox_guest_init import nixwait
    from agentbox_guest_init.shellenv import NIX_SOCKET

    where = nixwait.WAIT_DIR if os.geteuid() == 0 else nixwait.USER_WAIT_DIR
    try:
        wait_bin = nixwait.install(env["PATH"], NIX_SOCKET, wait_dir=where, off=off)
    except OSError as err:
        print(f"agentbox-guest-init: cannot write the Nix wait wrappers to {where} "
              f"({err.strerror}); the first nix command fails if the daemon is not up yet",
              file=sys.stderr)  # fmt: skip
        return
    if wait_bin is not None:
        env["PATH"] = f"{wait_bin}:{env['PATH']}"


def _libkrun_prep(contract: Contract, prof: Profile) -> bool:
    """Disks: /nix overlay + daemon (foreground), Podman storage (background). Returns whether
    a nix-daemon now serves /nix."""
    from agentbox_guest_init import nix, podman_prep
    from agentbox_guest_init.disks import find_disk
    from agentbox_guest_init.status import StatusFile
    from agentbox_guest_init.system import self_argv, spawn_background

    os.makedirs("/run/agentbox", exist_ok=True)
    if contract.use_passt:
        prof.step("fix-passt-dns")
        _rewrite("/etc/resolv.conf", lambda t: resolv_conf_with(t, PASST_DNS))
    if contract.nix_overlay:
        prof.step("bootstrap-nix:find-disk")
        device = find_disk(contract.nix_disk_label, contract.nix_disk_id, ("/dev/vda",))
        nix.mount_overlay(device, profile=prof)
        prof.step("bootstrap-nix:start-daemon")
        nix.start_daemon()
    elif contract.nix_host_overlay:  # the host already put the overlay on /nix: check, serve
        prof.step("bootstrap-nix:check-host-overlay")
        if not os.path.isdir("/nix/store"):
            raise GuestError(f"{contract.var('NIX_HOST_OVERLAY')}=1 but /nix/store is missing: "
                             "the host did not attach the /nix overlay")  # fmt: skip
        prof.step("bootstrap-nix:start-daemon")
        nix.start_daemon()
    if contract.containers_storage and (contract.host_uid is not None or contract.enter_as_root):
        prof.step("start-podman-prep")
        status = StatusFile(podman_prep.RUN_DIR, "podman-prep")
        argv = [*self_argv(), "libkrun", "podman", "prep"]
        pid = spawn_background(argv, status.log_path, env=dict(os.environ))
        status.transition("running", pid=pid)
    return contract.nix_overlay or contract.nix_host_overlay


def workspace_mount_needed(contract: Contract, mounts: str) -> bool:
    """Whether the virtiofs workspace still has to be mounted, given /proc/self/mounts (pure):
    False when the tag is already there, an error when something else is."""
    if not contract.workspace_tag:
        raise ContractError(f"{contract.var('MICROVM_WORKSPACE_TAG')} is required for microvm")
    return share_mount_needed(contract.workspace_tag, contract.workspace_target, mounts)


def share_mount_needed(tag: str, target: str, mounts: str) -> bool:
    """Whether the virtiofs share ``tag`` still has to be mounted at ``target`` (pure)."""
    for line in mounts.splitlines():
        source, mnt, fstype = line.split(" ")[:3]
        if mnt == target:
            if fstype == "virtiofs" and source == tag:
                return False
            raise GuestError(f"{target} is already a {fstype} mount of {source}, not {tag}")
    return True


def share_mounts(contract: Contract, mounts: str) -> list[list[str]]:
    """The ``mount`` command lines (pure) for the workspace, then each further share in the
    contract's order (an agent's git dir, read-only, before what a commit writes inside it),
    leaving out what /proc/self/mounts already has."""
    needed = [(contract.workspace_tag, contract.workspace_target, False)] \
        if workspace_mount_needed(contract, mounts) else []  # fmt: skip
    needed += [share for share in contract.shares if share_mount_needed(*share[:2], mounts)]
    return [["mount", "-t", "virtiofs", *(["-o", "ro"] if readonly else []), tag, target]
            for tag, target, readonly in needed]  # fmt: skip


def mount_workspace(contract: Contract) -> None:
    """microvm: the host's project over virtiofs at the workspace target, then the other
    shares the host announced (each at its target, made first)."""
    from agentbox_guest_init.system import run

    with open("/proc/self/mounts", encoding="utf-8") as f:
        commands = share_mounts(contract, f.read())
    for argv in commands:
        os.makedirs(argv[-1], exist_ok=True)
        run(argv)


def resize(contract: Contract, target: str) -> None:
    """``libkrun resize --target nix|containers``: grow the btrfs to fill its (grown) disk."""
    from agentbox_guest_init.disks import find_disk
    from agentbox_guest_init.system import run

    if target == "nix":
        label, disk_id = contract.nix_disk_label, contract.nix_disk_id
    elif target == "containers":
        label, disk_id = contract.containers_disk_label, contract.containers_disk_id
    else:
        raise GuestError(f"unknown resize target {target!r} (nix or containers)", code=2)
    device = find_disk(label, disk_id)
    mnt = f"/run/agentbox/resize-{target}"
    os.makedirs(mnt, exist_ok=True)
    run(["mount", "-t", "btrfs", device, mnt])
    try:
        run(["btrfs", "filesystem", "resize", "max", mnt])
    finally:
        run(["umount", mnt], check=False)
    print(f"resized {target} disk {device}", file=sys.stderr)
