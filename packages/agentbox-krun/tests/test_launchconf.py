import stat
from pathlib import Path

import pytest

from agentbox_krun import launchconf
from agentbox_krun.errors import LaunchConfError
from agentbox_krun.launchconf import Disk, LaunchConf, Mount, NixOverlay

CONF = LaunchConf(
    task_rootfs="/s/tasks/t1/rootfs", ram_mib=4096, vcpus=2, workdir="/workspace",
    exec_path="/bin/agentbox-guest-init",
    argv=("agentbox-guest-init", "microvm", "enter", "--", "sh", "-c", "echo 'x=y'\n"),
    env=("AGENTBOX_HOST_UID=1000", "TERM=xterm"),
    disks=(Disk("agentbox-nix", "/s/n.raw", False), Disk("agentbox-containers", "/s/c.raw", True)),
    workspace_source="/src/app", workspace_tag="agentbox-workspace", workspace_target="/workspace",
)  # fmt: skip


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "launch.conf"
    launchconf.write(CONF, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert launchconf.read(path) == CONF
    first = path.read_text().splitlines()[0]
    assert first == "task_rootfs=" + b"/s/tasks/t1/rootfs".hex()


def test_nix_overlay_round_trips(tmp_path: Path) -> None:
    import dataclasses

    conf = dataclasses.replace(
        CONF, nix_overlay=NixOverlay("/c/rootfs/nix", "/s/up", "/s/wk", "/s/lease"),
        init_log=True, task_lock="/s/tasks/t1/.task.lock",
        nested_virt=True, mounts=(Mount("/src/app", "/workspace", False), Mount("/t", "/t", True)),
    )  # fmt: skip
    path = tmp_path / "launch.conf"
    launchconf.write(conf, path)
    assert launchconf.read(path) == conf
    assert f"nix_upper={h('/s/up')}" in path.read_text().splitlines()
    assert f"nested_virt={h('auto')}" in path.read_text().splitlines()
    plain = launchconf.parse(launchconf.render(CONF))  # the microvm shape: none of them
    assert (plain.nix_overlay, plain.mounts, plain.init_log, plain.nested_virt) == (
        None, (), False, False,
    )  # fmt: skip


def test_indexes_are_ordered_numerically() -> None:
    lines = [f"argv.{i}={str(i).encode().hex()}" for i in (10, 2, 0, 1, 3, 4, 5, 6, 7, 8, 9)]
    base = [line for line in launchconf.render(CONF).splitlines() if not line.startswith("argv.")]
    conf = launchconf.parse("\n".join(base + lines))
    assert conf.argv == tuple(str(i) for i in range(11))


def h(value: str) -> str:
    return value.encode().hex()


REQUIRED = [f"task_rootfs={h('/r')}", f"ram_mib={h('1')}", f"vcpus={h('1')}",
            f"workdir={h('/')}", f"exec_path={h('/x')}"]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["nokey"], "launch.conf:6: no '=' in the line"),
        (["color=00"], "launch.conf:6: unknown key 'color'"),
        ([f"vcpus={h('2')}"], "launch.conf:6: duplicate key 'vcpus'"),
        (["argv.0=zz"], "launch.conf:6: the value of argv.0 is not valid hex"),
        (["argv.0=abc"], "launch.conf:6: the value of argv.0 is not valid hex"),
        (["argv.0=ff"], "launch.conf:6: the value of argv.0 is not UTF-8"),
        ([f"argv.1={h('a')}"], "argv.N indexes are not 0..0: [1]"),
        ([f"argv.x={h('a')}"], "launch.conf:6: unknown key 'argv.x'"),
        ([f"disk.0.id={h('a')}"], "disk.0 needs id, path and readonly"),
        ([f"disk.0.id={h('a')}", f"disk.0.path={h('/p')}", f"disk.0.readonly={h('yes')}"],
         "disk.0.readonly is not 0 or 1: 'yes'"),
        ([f"disk.0.size={h('1')}"], "launch.conf:6: unknown key 'disk.0.size'"),
        ([f"init_log={h('yes')}"], "init_log is not 0 or 1: 'yes'"),
        ([f"nested_virt={h('on')}"], "nested_virt is not auto: 'on'"),
        ([f"mount.0.source={h('/p')}", f"mount.0.target={h('/workspace')}"],
         "mount.0 needs source, target and readonly"),
        *(([f"mount.0.source={h('/p')}", f"mount.0.target={h(target)}",
            f"mount.0.readonly={h('0')}"],
           f"mount target {target!r} is not a normalised absolute guest path below /")
          for target in ("workspace", "/a/../etc", "/", "//x", "/w/")),
        ([f"mount.1.source={h('/p')}", f"mount.1.target={h('/w')}", f"mount.1.readonly={h('1')}"],
         "mount.N indexes are not 0..0: [1]"),
        ([f"nix_lower={h('/l')}", f"nix_work={h('/w')}"],
         "launch.conf: nix_lower, nix_upper, nix_work, nix_lease go together; only nix_lower, "
         "nix_work given"),
    ],
)  # fmt: skip
def test_refusals(extra: list[str], message: str) -> None:
    with pytest.raises(LaunchConfError) as caught:
        launchconf.parse("\n".join(REQUIRED + extra))
    assert caught.value.message == message


def test_missing_required_and_bad_numbers() -> None:
    with pytest.raises(LaunchConfError, match="missing required keys: ram_mib, vcpus"):
        launchconf.parse("\n".join(r for r in REQUIRED if not r.startswith(("ram", "vcpus"))))
    bad = [r if not r.startswith("ram_mib") else f"ram_mib={h('4G')}" for r in REQUIRED]
    with pytest.raises(LaunchConfError, match="ram_mib is not a whole number: '4G'"):
        launchconf.parse("\n".join(bad))
