"""The helper's /nix overlay: option checks (pure), and the real kernel overlay mounted in the
helper's own mount namespace (root), seen by the "guest" (the stub's on-enter program) and gone
from the host's mount table when the helper ends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentbox_krun.errors import KrunError
from agentbox_krun.launchconf import LaunchConf, Mount, NixOverlay
from agentbox_krun.nsmount import overlay_options
from agentbox_testing import require_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Launched

    Runner = Callable[[Path, LaunchConf, str], Launched]

ENV_VAR = "LOFTD_LIBKRUN_LIBRARY"


def test_options_and_refusals() -> None:
    ok = NixOverlay("/c/rootfs/nix", "/s/upper", "/s/work", "/s/lease")
    assert overlay_options(ok) == "lowerdir=/c/rootfs/nix,upperdir=/s/upper,workdir=/s/work"
    assert overlay_options(ok, userns=True).endswith(",workdir=/s/work,userxattr")
    with pytest.raises(KrunError) as backslash:
        overlay_options(ok._replace(lower="/c/a\\b"))
    assert "contains '\\\\'" in backslash.value.message
    with pytest.raises(KrunError) as comma:
        overlay_options(ok._replace(upper="/s/a,b"))
    assert comma.value.message == (
        "the /nix overlay's upper dir '/s/a,b' contains ',', which overlayfs cannot take in a path"
    )
    with pytest.raises(KrunError, match="lower dir 'rootfs/nix' is not absolute"):
        overlay_options(ok._replace(lower="rootfs/nix"))
    with pytest.raises(KrunError, match="contains ':'"):
        overlay_options(ok._replace(work="/s/w:x"))


@pytest.fixture
def run(launch: Callable[..., Launched]) -> Callable[[Path, LaunchConf, str], Launched]:
    """The helper as loftd starts it; ``on_enter`` is what the "guest" runs; VM status 5."""
    return lambda lib, conf, on_enter: launch(lib, conf, env_var=ENV_VAR, on_enter=on_enter,
                                              KRUN_STUB_EXIT="5")  # fmt: skip


@pytest.mark.root
def test_the_guest_sees_the_overlay_and_the_host_does_not(
    stub: Path, tmp_path: Path, run: Runner
) -> None:
    require_root("mounting a kernel overlay")
    rootfs = tmp_path / "rootfs"
    (rootfs / "nix").mkdir(parents=True)
    lower = tmp_path / "image-nix"
    (lower / "store").mkdir(parents=True)
    (lower / "store" / "from-image").write_text("image\n")
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    conf = LaunchConf(
        task_rootfs=str(rootfs), ram_mib=512, vcpus=1, workdir="/", exec_path="/init",
        nix_overlay=NixOverlay(str(lower), str(upper), str(work), str(tmp_path / "lease")),
    )  # fmt: skip
    code, _, out, err = run(stub, conf, 'cat "$1/nix/store/from-image"\n'
                            'echo guest > "$1/nix/store/from-guest"\n'
                            'grep -c " $1/nix " /proc/self/mountinfo\n')  # fmt: skip
    assert (code, err) == (5, "")
    assert out == "image\n1\n"  # the image's /nix through the overlay, mounted once
    assert (upper / "store" / "from-guest").read_text() == "guest\n"  # kept in the upper
    assert not (lower / "store" / "from-guest").exists()  # the image's /nix is untouched
    assert os.listdir(rootfs / "nix") == []  # the host never saw the mount
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        assert f" {rootfs}/nix " not in f.read()
    # again: the second task sees what the first one wrote
    code, _, out, err = run(stub, conf, 'cat "$1/nix/store/from-guest"\n')
    assert (code, out, err) == (5, "guest\n", "")


@pytest.mark.root
def test_bind_mounts_graft_the_workspace(stub: Path, tmp_path: Path, run: Runner) -> None:
    require_root("bind mounts in a mount namespace")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "etc").mkdir()
    project = tmp_path / "project"
    project.mkdir()
    (project / "README").write_text("mine\n")
    tools = tmp_path / "tools"
    tools.mkdir()
    conf = LaunchConf(
        task_rootfs=str(rootfs), ram_mib=512, vcpus=1, workdir="/workspace", exec_path="/init",
        mounts=(Mount(str(project), "/workspace", False), Mount(str(tools), "/opt/tools", True)),
    )  # fmt: skip
    code, _, out, err = run(stub, conf, 'cat "$1/workspace/README"\n'
                            'echo made > "$1/workspace/made-in-guest"\n'
                            'touch "$1/opt/tools/x" 2>/dev/null || echo read-only\n')  # fmt: skip
    assert (code, out, err) == (5, "mine\nread-only\n", "")
    assert (project / "made-in-guest").read_text() == "made\n"  # the real project, not a copy
    assert os.listdir(rootfs / "workspace") == []  # mounted only in the helper's namespace
    assert not (tools / "x").exists()
    # an image whose /workspace is a symlink out of the root is refused
    (rootfs / "workspace").rmdir()
    (rootfs / "workspace").symlink_to(tmp_path / "elsewhere")
    code, _, out, err = run(stub, conf, "echo never\n")
    assert (code, out) == (125, "")
    assert f"{rootfs}/workspace leads through a symlink: refusing to mount there" in err
    # ...and one whose /workspace is a file: the mkdir's errno, still before libkrun
    (rootfs / "workspace").unlink()
    (rootfs / "workspace").write_text("not a dir\n")
    code, _, out, err = run(stub, conf, "echo never\n")
    assert (code, out) == (125, "")
    assert f"preparing the root failed: mkdir {rootfs}/workspace failed: EEXIST" in err


def test_user_namespace_detection() -> None:
    from agentbox_krun.nsmount import in_user_namespace

    assert in_user_namespace("         0          0 4294967295\n") is False
    assert in_user_namespace("         0       1001          1\n         1     100000      65536\n")


@pytest.mark.root
def test_the_nix_lease_and_a_symlinked_nix(stub: Path, tmp_path: Path, run: Runner) -> None:
    from agentbox_state.lock import FileLock

    require_root("mounting a kernel overlay")
    rootfs, lower = tmp_path / "rootfs", tmp_path / "image-nix"
    (rootfs / "nix").mkdir(parents=True)
    (lower / "store").mkdir(parents=True)
    for d in ("upper", "work"):
        (tmp_path / d).mkdir()
    overlay = NixOverlay(str(lower), str(tmp_path / "upper"), str(tmp_path / "work"),
                         str(tmp_path / "lease"))  # fmt: skip
    conf = LaunchConf(task_rootfs=str(rootfs), ram_mib=512, vcpus=1, workdir="/", exec_path="/i",
                      nix_overlay=overlay)  # fmt: skip
    # the helper holds the lease while the VM runs: the script finds it taken
    code, _, out, _ = run(stub, conf, f"flock -n {tmp_path}/lease true || echo lease-held\n")
    assert (code, out) == (5, "lease-held\n")
    held = FileLock(tmp_path / "lease", what="a test")
    held.acquire()
    try:  # another task holds it: this helper stops before mounting anything
        code, _, out, err = run(stub, conf, "echo never\n")
    finally:
        held.release()
    assert (code, out) == (125, "")
    assert f"the /nix overlay {tmp_path} is in use: its lock {tmp_path}/lease is held by pid " \
        f"{os.getpid()}" in err  # fmt: skip
    (rootfs / "nix").rmdir()
    (rootfs / "nix").symlink_to("/usr")  # an image pointing /nix at the host's /usr
    code, _, out, err = run(stub, conf, "echo never\n")
    assert (code, out) == (125, "")
    assert f"{rootfs}/nix leads through a symlink: refusing to mount there" in err


@pytest.mark.root
def test_a_failed_mount_stops_before_libkrun(stub: Path, tmp_path: Path, run: Runner) -> None:
    require_root("mounting a kernel overlay")
    (tmp_path / "rootfs" / "nix").mkdir(parents=True)
    conf = LaunchConf(
        task_rootfs=str(tmp_path / "rootfs"), ram_mib=512, vcpus=1, workdir="/", exec_path="/i",
        nix_overlay=NixOverlay(str(tmp_path / "missing"), str(tmp_path), str(tmp_path / "w"),
                               str(tmp_path / "lease")),
    )  # fmt: skip
    code, calls, _, err = run(stub, conf, "echo never\n")
    assert code == 125
    assert err.startswith("libkrun helper: preparing the root failed: mount -t "
                          f"overlay -o lowerdir={tmp_path}/missing,")  # fmt: skip
    assert "ENOENT" in err
    assert calls == []  # libkrun was never configured
