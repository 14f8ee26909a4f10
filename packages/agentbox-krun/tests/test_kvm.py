"""Can this host boot a VM: the decision as a table, the probe on files made here."""

import errno
from pathlib import Path

import pytest

from agentbox_krun import kvm
from agentbox_krun.kvm import KvmFacts, KvmUnavailableError


def facts(*, device: bool = True, open_errno: int | None = None, flags: tuple[str, ...] = (),
          modules: tuple[str, ...] = ()) -> KvmFacts:  # fmt: skip
    return KvmFacts(device=device, open_errno=open_errno, cpu_flags=frozenset(flags),
                    modules=frozenset(modules))  # fmt: skip


@pytest.mark.parametrize(
    ("found", "problem"),
    [
        (facts(flags=("vmx",), modules=("kvm", "kvm_intel")), None),
        (facts(flags=("svm",), modules=("kvm", "kvm_amd")), None),
        # a nested guest whose cpuinfo hides the flag, with the hardware module loaded
        (facts(modules=("kvm", "kvm_intel")), None),
        # this kind of machine: kvm-pvm only
        (facts(modules=("kvm", "kvm_pvm")), "/dev/kvm is served by kvm_pvm, a software "
         "hypervisor (no vmx/svm CPU flag, no kvm_intel/kvm_amd module): it boots no ordinary "
         "guest kernel"),
        (facts(modules=("kvm",)), "/dev/kvm is not backed by hardware virtualization (no "
         "vmx/svm CPU flag, no kvm_intel/kvm_amd module; KVM modules loaded: kvm)"),
        (facts(device=False), "/dev/kvm does not exist (KVM modules loaded: none)"),
        (facts(open_errno=errno.EACCES, flags=("vmx",)), "/dev/kvm cannot be opened read-write: "
         "EACCES (Permission denied)"),
        # this CI host, as the ordinary user: /dev/kvm is 0600 root and served by kvm_pvm
        (facts(open_errno=errno.EACCES, modules=("kvm", "kvm_pvm")), "/dev/kvm cannot be opened "
         "read-write: EACCES (Permission denied); and is served by kvm_pvm, a software "
         "hypervisor (no vmx/svm CPU flag, no kvm_intel/kvm_amd module): it boots no ordinary "
         "guest kernel"),
    ],
    ids=["intel", "amd", "nested", "kvm-pvm", "no-hardware", "no-device", "no-access",
         "no-access-pvm"],
)  # fmt: skip
def test_problem(found: KvmFacts, problem: str | None) -> None:
    assert kvm.problem(found) == problem


def test_hints_name_the_fix_the_way_on_and_the_opt_out() -> None:
    pvm = kvm.hint(facts(modules=("kvm_pvm",)), "X_SKIP_KVM_CHECK")
    assert pvm == ("`agentbox container` runs the same image without a VM; X_SKIP_KVM_CHECK=1 "
                   "skips this check (for a guest kernel that does run here)")  # fmt: skip
    assert kvm.hint(facts(open_errno=errno.EACCES), "X").startswith(
        "add yourself to the kvm group (sudo usermod -aG kvm $USER, then log in again); "
    )
    assert kvm.hint(facts(device=False), "X").startswith("enable virtualization in the firmware")
    # the kvm group would not help where kvm_pvm serves the device
    assert kvm.hint(facts(open_errno=errno.EACCES, modules=("kvm_pvm",)), "X").startswith(
        "`agentbox container` runs the same image without a VM"
    )


def test_probe_reads_the_device_cpuinfo_and_modules(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu vme sse vmx avx\n\nprocessor\t: 1\n"
                       "flags\t\t: fpu vmx\n")  # fmt: skip
    modules = tmp_path / "module"
    for name in ("kvm", "kvm_intel", "ext4", "kvmgt_not_kvm"):
        (modules / name).mkdir(parents=True)
    device = tmp_path / "kvm"
    device.write_text("")  # opens read-write, as a usable /dev/kvm does
    got = kvm.probe(str(device), str(cpuinfo), str(modules))
    assert got == facts(flags=("vmx",), modules=("kvm", "kvm_intel"))
    # a device that cannot be opened read-write (a directory: EISDIR, also for root)
    assert kvm.probe(str(modules), str(cpuinfo), str(modules)).open_errno == errno.EISDIR
    assert not kvm.probe(str(tmp_path / "none"), str(cpuinfo), str(modules)).device


def test_check_refuses_and_the_opt_out_skips() -> None:
    pvm = facts(modules=("kvm", "kvm_pvm"))
    with pytest.raises(KvmUnavailableError) as caught:
        kvm.check({}, "AGENTBOX_", "agentbox microvm", facts=pvm)
    assert caught.value.message.startswith("agentbox microvm cannot start a VM here: /dev/kvm is "
                                           "served by kvm_pvm")  # fmt: skip
    assert caught.value.hint is not None
    assert "AGENTBOX_SKIP_KVM_CHECK=1" in caught.value.hint
    kvm.check({"AGENTBOX_SKIP_KVM_CHECK": "1"}, "AGENTBOX_", "m", facts=pvm)  # no error
    with pytest.raises(KvmUnavailableError):  # only exactly 1 skips
        kvm.check({"AGENTBOX_SKIP_KVM_CHECK": "yes"}, "AGENTBOX_", "m", facts=pvm)
    kvm.check({}, "LOFTD_", "loftd", facts=facts(flags=("svm",)))  # hardware: nothing to say
