"""Can this host boot a microVM? Asked before a VM mode creates anything.

libkrun needs ``/dev/kvm`` opened read-write, backed by the CPU's virtualization (Intel VT-x:
the ``vmx`` flag and ``kvm_intel``; AMD-V: ``svm`` and ``kvm_amd``). Some cloud machines offer a
``/dev/kvm`` served by ``kvm_pvm``, a software hypervisor that runs only guests built for it: an
ordinary guest kernel spins there until libkrun gives up (about a minute) and prints nothing
useful. Such a host is refused at once, with what was found; ``<PREFIX>SKIP_KVM_CHECK=1`` lets
someone whose guest kernel does run there try anyway.

``probe`` reads the host (files only, no ioctl); ``problem`` decides (pure, table-tested).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass

from agentbox_state.errors import AgentboxError

DEVICE = "/dev/kvm"
HARDWARE_MODULES = ("kvm_intel", "kvm_amd")
HARDWARE_FLAGS = ("vmx", "svm")
SKIP_SUFFIX = "SKIP_KVM_CHECK"


@dataclass(frozen=True, slots=True, kw_only=True)
class KvmFacts:
    device: bool  # /dev/kvm exists
    open_errno: int | None  # None when it opened read-write
    cpu_flags: frozenset[str]  # the virtualization flags of /proc/cpuinfo found (vmx, svm)
    modules: frozenset[str]  # the KVM modules loaded (kvm_intel, kvm_amd, kvm_pvm, ...)


class KvmUnavailableError(AgentboxError):
    """This host cannot boot the VM; the message says what was found."""


def probe(
    device: str = DEVICE, cpuinfo: str = "/proc/cpuinfo", modules_dir: str = "/sys/module"
) -> KvmFacts:
    exists = os.path.exists(device)
    open_errno = None
    if exists:
        try:
            fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        except OSError as err:
            open_errno = err.errno or errno.EIO
        else:
            os.close(fd)
    flags: set[str] = set()
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags |= set(line.partition(":")[2].split()) & set(HARDWARE_FLAGS)
    except OSError:
        pass
    try:
        loaded = {m for m in os.listdir(modules_dir) if m == "kvm" or m.startswith("kvm_")}
    except OSError:
        loaded = set()
    return KvmFacts(device=exists, open_errno=open_errno, cpu_flags=frozenset(flags),
                    modules=frozenset(loaded))  # fmt: skip


def problem(facts: KvmFacts) -> str | None:
    """Why no ordinary guest kernel can boot here, or None when it can (pure). A device that
    cannot be opened is said first, and what serves it too when no access would help."""
    if not facts.device:
        loaded = ", ".join(sorted(facts.modules)) or "none"
        return f"{DEVICE} does not exist (KVM modules loaded: {loaded})"
    backing = _backing_problem(facts)
    if facts.open_errno is not None:
        name = errno.errorcode.get(facts.open_errno, f"errno {facts.open_errno}")
        why = os.strerror(facts.open_errno)
        opened = f"{DEVICE} cannot be opened read-write: {name} ({why})"
        return f"{opened}; and {backing}" if backing else opened
    return f"{DEVICE} {backing}" if backing else None


def _backing_problem(facts: KvmFacts) -> str | None:
    """What is wrong with what serves the device, as a predicate of it (pure)."""
    if facts.cpu_flags or facts.modules & set(HARDWARE_MODULES):
        return None
    if "kvm_pvm" in facts.modules:
        return ("is served by kvm_pvm, a software hypervisor (no vmx/svm CPU flag, no "
                "kvm_intel/kvm_amd module): it boots no ordinary guest kernel")  # fmt: skip
    loaded = ", ".join(sorted(facts.modules)) or "none"
    return ("is not backed by hardware virtualization (no vmx/svm CPU flag, no "
            f"kvm_intel/kvm_amd module; KVM modules loaded: {loaded})")  # fmt: skip


def hint(facts: KvmFacts, skip_var: str) -> str:
    fix = ""
    if facts.open_errno == errno.EACCES and "kvm_pvm" not in facts.modules:
        fix = "add yourself to the kvm group (sudo usermod -aG kvm $USER, then log in again); "
    elif not facts.device:
        fix = ("enable virtualization in the firmware and load kvm_intel or kvm_amd "
               "(sudo modprobe kvm_intel); ")  # fmt: skip
    return (f"{fix}`agentbox container` runs the same image without a VM; {skip_var}=1 skips "
            "this check (for a guest kernel that does run here)")  # fmt: skip


def check(
    environ: Mapping[str, str], prefix: str, mode: str, facts: KvmFacts | None = None
) -> None:
    """Raise ``KvmUnavailableError`` naming ``mode`` unless the host can boot a VM, or
    ``<prefix>SKIP_KVM_CHECK=1`` says not to ask."""
    skip_var = prefix + SKIP_SUFFIX
    if environ.get(skip_var) == "1":
        return
    found = probe() if facts is None else facts
    reason = problem(found)
    if reason is not None:
        raise KvmUnavailableError(f"{mode} cannot start a VM here: {reason}",
                                  hint=hint(found, skip_var))  # fmt: skip
