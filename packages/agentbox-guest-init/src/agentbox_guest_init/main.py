"""Entry points of ``agentbox-guest-init`` and ``loftd-guest-init``.

Standard library only, and nothing of agentbox's host packages: this runs inside the guest,
frozen. Parsing is a hand-written loop (argparse costs start-up time here).

Usage::

    agentbox-guest-init default|container|libkrun|microvm enter [-- CMD...]
    agentbox-guest-init libkrun resize --target nix|containers
    agentbox-guest-init libkrun podman prep|wait|service-wait
    loftd-guest-init enter [-- CMD...]

Exit codes: 0 success; 2 usage error; 3 malformed host contract; 4 a preparation step failed;
126/127 the command is not executable / not found; otherwise the command's own status (it
replaces this process). In the VM modes the host names a file in the task root
(``*_GUEST_STATUS_FILE``) where the guest init reports ``started``, ``exited N`` or ``failed N``
(see ``report``).
"""

from __future__ import annotations

import os
import sys

from agentbox_guest_init import __version__
from agentbox_guest_init.contract import EXIT_USAGE, GuestError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

PROG = "agentbox-guest-init"
USAGE = (
    f"usage: {PROG} (default|container|libkrun|microvm) enter [-- CMD...] | "
    f"{PROG} libkrun resize --target nix|containers | "
    f"{PROG} libkrun podman prep|wait|service-wait | {PROG} --version"
)


class UsageError(GuestError):
    code = EXIT_USAGE


def _command(rest: list[str]) -> list[str]:
    if not rest:
        return []
    if rest[0] != "--":
        raise UsageError(f"unexpected argument {rest[0]!r}; put the command after --")
    return rest[1:]


def dispatch(args: list[str], prog: str = PROG) -> int:
    from agentbox_guest_init import runtime

    if args in (["--version"], ["-V"]):
        print(f"{prog} {__version__}")
        return 0
    if args in (["--help"], ["-h"]):
        print(USAGE)
        return 0
    if len(args) < 2:
        raise UsageError(f"unknown command: {' '.join(args) or '(nothing)'}")
    runtime_name, verb, rest = args[0], args[1], args[2:]
    if verb == "enter" and runtime_name in ("default", "container", "libkrun", "microvm"):
        contract = parse(os.environ)
        cmd = _command(rest)
        if runtime_name == "default":
            runtime_name = "libkrun" if contract.libkrun else "container"
        if runtime_name == "microvm":
            runtime.mount_workspace(contract)
        runtime.enter(f"{runtime_name} enter", contract, cmd, libkrun=runtime_name != "container")
        return 0  # not reached: enter replaces this process
    if runtime_name == "libkrun" and verb == "resize":
        if len(rest) != 2 or rest[0] != "--target":
            raise UsageError("usage: libkrun resize --target nix|containers")
        runtime.resize(parse(os.environ), rest[1])
        return 0
    if runtime_name == "libkrun" and verb == "podman" and len(rest) == 1:
        from agentbox_guest_init import podman_prep

        contract = parse(os.environ)
        if rest[0] == "prep":  # for whoever the shell runs as: root's storage, or dev's
            uid, gid = (0, 0) if contract.enter_as_root else (contract.host_uid, contract.host_gid)
            if uid is None or gid is None:
                raise UsageError(
                    f"{contract.var('HOST_UID')}/{contract.var('HOST_GID')} are needed"
                )
            return podman_prep.worker(uid, gid, contract.containers_disk_label,
                                      contract.containers_disk_id)  # fmt: skip
        if rest[0] == "wait":
            podman_prep.wait()
            return 0
        if rest[0] == "service-wait":
            print(podman_prep.service_wait(os.getuid()))
            return 0
    raise UsageError(f"unknown command: {' '.join(args)}")


def _run(args: list[str], prog: str, dispatcher: Callable[[list[str], str], int]) -> int:
    try:
        return dispatcher(args, prog)
    except GuestError as err:
        print(f"{prog}: {err.reason}", file=sys.stderr)
        return _failed(prog, err.code)
    except OSError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return _failed(prog, 4)


def _failed(prog: str, code: int) -> int:
    """Tell the host (VM modes) that the guest init itself failed, before any command ran."""
    prefix = "LOFTD_" if prog.startswith("loftd") else "AGENTBOX_"
    path = os.environ.get(prefix + "GUEST_STATUS_FILE", "")
    if path.startswith("/"):
        from agentbox_guest_init import report

        report.write(path, report.failed(code), prog)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    return _run(list(sys.argv[1:] if argv is None else argv), PROG, dispatch)


def loftd_dispatch(args: list[str], prog: str) -> int:
    """loftd-guest-init: ``enter [-- CMD...]`` with the LOFTD_* contract."""
    from agentbox_guest_init import runtime

    if args in (["--version"], ["-V"]):
        print(f"{prog} {__version__}")
        return 0
    if not args or args[0] != "enter":
        raise UsageError(f"unknown command: {' '.join(args) or '(nothing)'}; usage: {prog} enter "
                    "[-- CMD...]")  # fmt: skip
    contract = parse(os.environ, prefix="LOFTD_")
    runtime.enter("enter", contract, _command(args[1:]), libkrun=contract.libkrun, prog=prog)
    return 0


def loftd_main(argv: Sequence[str] | None = None) -> int:
    return _run(list(sys.argv[1:] if argv is None else argv), "loftd-guest-init", loftd_dispatch)


def entry() -> int:
    """The frozen binary's entry: one bundle serves both names, chosen by argv[0]. What the
    bootloader put into the environment for itself goes first, so that nothing this process
    starts (mount, nix-daemon, the user's command) sees it; a re-exec of the bundle gets its
    own again from the bootloader."""
    if getattr(sys, "frozen", False):
        from agentbox_guest_init.shellenv import without_bundle

        clean = without_bundle(os.environ)
        os.environ.clear()
        os.environ.update(clean)
    if os.path.basename(sys.argv[0]).startswith("loftd"):
        return loftd_main()
    return main()
