"""`agentbox doctor` on this host, against the truth: each check's result is what the host
really is (asked here independently: which tools exist, /etc/subuid, /sys/module, podman info),
as root and as the ordinary test user; and each warn/fail path is forced once for real (a tool
hidden through the runner, a vfs storage config, a subuid file without the user's range, a
libkrunfw the loader cannot find). Unit tests judge the verdicts; these judge the probe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agentbox_cli.doctor import checks
from agentbox_testing import require
from agentbox_testing.schemas import load_schema, problems

pytestmark = [pytest.mark.root, pytest.mark.podman]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Home, UserBox

PVM = os.path.isdir("/sys/module/kvm_pvm") and not (
    os.path.isdir("/sys/module/kvm_intel") or os.path.isdir("/sys/module/kvm_amd")
)


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["checks"]}


def modes(doc: dict[str, Any]) -> dict[str, bool]:
    return {m["mode"]: m["can_run"] for m in doc["modes"]}


def doctor_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(done.stdout)
    assert problems(doc, load_schema("agentbox_cli.doctor")) == []
    assert done.returncode == (0 if doc["can_run_default"] else 1), done.stderr
    return doc


def version_line(tool: str) -> str:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[0]


def assert_host_truth(got: dict[str, dict[str, object]]) -> None:
    """What this host is, whoever asks: tools, KVM, crun."""
    assert got["podman"]["status"] == "ok"
    assert got["podman"]["found"] == version_line("podman")
    assert got["buildah"]["found"] == version_line("buildah")
    if shutil.which("crun") is None:
        assert got["crun +LIBKRUN"]["status"] == "fail"
        assert got["crun +LIBKRUN"]["found"] == "crun is not installed"
    if PVM:  # this CI host: a kvm_pvm /dev/kvm, no hardware virtualization
        assert got["/dev/kvm"]["status"] == "fail"
        assert "served by kvm_pvm" in str(got["/dev/kvm"]["found"])
        assert got["/dev/kvm"]["needed_by"] == ["libkrun", "microvm"]
    assert got["fuse"]["status"] == (
        "ok" if os.path.exists("/dev/fuse") and shutil.which("fuse-overlayfs") else "fail"
    )


def test_as_root_every_check_says_what_this_host_is(agentbox: Path, home: Home) -> None:
    done = home.run(agentbox, "doctor", "--json")
    doc = doctor_json(done)
    got = by_name(doc)
    assert_host_truth(got)
    assert got["subuid"] == {
        "name": "subuid",
        "status": "ok",
        "fix": None,
        "needed_by": [],
        "found": "running as root: rootful Podman maps no subordinate ids",
    }
    driver = subprocess.run(
        ["podman", "info", "--format", "{{.Store.GraphDriverName}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert got["storage driver"]["found"].startswith(driver)
    assert doc["default_mode"] == {"mode": "libkrun", "source": "default"}
    if PVM and shutil.which("crun") is None:
        assert modes(doc) == {"libkrun": False, "container": True, "microvm": False}
        assert doc["suggestion"] == {
            "mode": "container", "config_file": f"{home.home}/.config/agentbox/agentbox.toml",
            "lines": ["[run]", 'mode = "container"'], "env": "AGENTBOX_MODE=container",
        }  # fmt: skip
        text = home.run(agentbox, "doctor")
        assert text.returncode == 1
        assert text.stdout.splitlines()[-3:] == [
            "libkrun cannot run here and container can: to make it what bare `agentbox` runs, "
            f"put these lines in {home.home}/.config/agentbox/agentbox.toml (or set "
            "AGENTBOX_MODE=container):",
            "    [run]",
            '    mode = "container"',
        ]
        # bare agentbox refuses (no crun) and points to doctor and the config line
        bare = home.run(agentbox, "--", "true")
        assert bare.returncode == 1
        assert bare.stderr.splitlines()[0] == (
            "agentbox: libkrun mode is not available here: crun is not installed"
        )
        assert "`agentbox doctor` says which mode this host can run" in bare.stderr
        assert 'mode = "container"' in bare.stderr


def test_a_configured_mode_that_runs_here_exits_zero(agentbox: Path, home: Home) -> None:
    home.config("agentbox", '[run]\nmode = "container"\n')
    doc = doctor_json(home.run(agentbox, "doctor", "--json"))
    assert doc["default_mode"] == {
        "mode": "container",
        "source": f"{home.home}/.config/agentbox/agentbox.toml [run].mode",
    }
    assert doc["can_run_default"] is True
    assert doc["suggestion"] is None
    over = doctor_json(home.run(agentbox, "doctor", "--json", AGENTBOX_MODE="microvm"))
    assert over["default_mode"] == {"mode": "microvm", "source": "env AGENTBOX_MODE"}


@pytest.mark.image
def test_as_the_test_user_podman_fuse_and_the_rootless_set_up_pass(
    user_image: str, user_box: Callable[..., UserBox]
) -> None:
    box = user_box()
    doc = doctor_json(box.run("doctor", "--json"))
    got = by_name(doc)
    assert_host_truth(got)
    assert got["fuse"]["status"] == "ok"
    assert got["newuidmap/newgidmap"]["status"] == "ok"
    user, uid = box.user, box.pw.pw_uid
    for kind in ("subuid", "subgid"):
        lines = [ln.split(":") for ln in Path(f"/etc/{kind}").read_text().splitlines()]
        mine = [(int(f[1]), int(f[2])) for f in lines if len(f) == 3 and f[0] in (user, str(uid))]
        assert mine, f"the test user has no /etc/{kind} range"
        shown = ", ".join(f"{a}-{a + n - 1}" for a, n in mine)
        assert got[kind]["found"].startswith(f"{user}: {shown} (")
    driver = box.podman("info", "--format", "{{.Store.GraphDriverName}}").strip()
    assert got["storage driver"]["status"] == ("warn" if driver == "vfs" else "ok")
    # the image the suite loaded for the user, with this agentbox's guest init
    assert got["image"]["status"] == "ok"
    assert got["image guest init"] == {
        "name": "image guest init", "status": "ok", "fix": None, "needed_by": [],
        "found": f"{checks_guest_init()}, as this agentbox's"}  # fmt: skip
    assert modes(doc)["container"] is True


def checks_guest_init() -> str:
    import agentbox_guest_init

    return agentbox_guest_init.__version__


def test_a_hidden_tool_fails_the_modes_that_need_it(home: Home, tmp_path: Path) -> None:
    """The probe itself, through a runner on which podman, crun, fuse-overlayfs and btrfs are
    missing (the genuine "not installed" failure of starting them)."""
    from agentbox_cli.doctor.probe import probe_host
    from agentbox_state.testing import HidingRunner

    runner = HidingRunner(home.env, ["podman", "fuse-overlayfs", "mkfs.btrfs"])
    facts = probe_host(runner, home.env, base=tmp_path / "state", images=tmp_path / "images",
                       image_ref="localhost/agentbox:latest",
                       guest_init_version=checks_guest_init())  # fmt: skip
    got = {c.name: c for c in checks.all_checks(facts)}
    assert (got["podman"].status, got["podman"].found) == ("fail", "podman is not installed")
    assert got["fuse"].found.endswith("fuse-overlayfs is not installed")
    assert (got["btrfs-progs"].status, got["btrfs-progs"].fix) == (
        "fail", "apt-get install btrfs-progs")  # fmt: skip
    assert got["storage driver"].found == "podman info failed: podman is missing"
    assert got["image"].status == "warn"
    verdict = {m.mode: m for m in checks.verdicts(list(got.values()))}
    assert not verdict["container"].can_run
    assert "podman: podman is not installed" in verdict["container"].reasons


def test_a_vfs_storage_config_is_a_warning_with_the_fix(
    agentbox: Path, home: Home, tmp_path: Path
) -> None:
    conf = tmp_path / "storage.conf"
    conf.write_text(
        textwrap.dedent(f"""\
        [storage]
        driver = "vfs"
        graphroot = "{tmp_path}/graph"
        runroot = "{tmp_path}/run"
    """)
    )
    done = home.run(agentbox, "doctor", "--json", CONTAINERS_STORAGE_CONF=str(conf))
    got = by_name(doctor_json(done))
    assert got["storage driver"]["status"] == "warn"
    assert got["storage driver"]["found"] == "vfs (copies the whole image for every container)"
    assert "podman system reset" in str(got["storage driver"]["fix"])
    assert got["image"]["found"] == "localhost/agentbox:latest is not in local storage"


def test_a_subuid_file_without_the_users_range_fails_rootless_podman(
    user_box: Callable[..., UserBox],
) -> None:
    import tempfile

    box = user_box()
    tmp = Path(tempfile.mkdtemp(prefix="agentbox-doctor-"))  # pytest's tmp_path is root's only
    tmp.chmod(0o755)
    fake = tmp / "subuid"
    fake.write_text("someone-else:100000:65536\n")
    fake.chmod(0o644)
    code = textwrap.dedent(f"""\
        import json, os
        from pathlib import Path
        from agentbox_cli.doctor import checks
        from agentbox_cli.doctor.probe import probe_host
        from agentbox_state.runner import SubprocessRunner
        facts = probe_host(SubprocessRunner(os.environ), os.environ, base=Path("/nonexistent"),
                           images=Path("/nonexistent"), image_ref="localhost/agentbox:latest",
                           guest_init_version="0", subuid_path={os.fspath(fake)!r})
        print(json.dumps([c.__dict__ for c in checks.all_checks(facts) if c.name == "subuid"]))
    """)
    argv = ["runuser", "-u", box.user, "--", *box.env(), "python3", "-c", code]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/tmp")
    finally:
        shutil.rmtree(tmp)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{
        "name": "subuid", "status": "fail", "found": f"no range for {box.user} in {fake}",
        "fix": f"sudo usermod --add-subuids 100000-165535 {box.user}",
        "needed_by": ["libkrun", "container"],
    }]  # fmt: skip


@pytest.mark.libkrun
def test_libkrun_loads_and_libkrunfw_is_found_only_on_the_loader_path(
    agentbox: Path, home: Home
) -> None:
    """PyPI's smolmachines ships libkrun.so with libkrunfw.so.5 beside it: by path libkrun
    loads (with virglrenderer preloaded), and libkrunfw is found only once LD_LIBRARY_PATH names
    that dir."""
    import importlib.util

    spec = importlib.util.find_spec("smol")
    require(spec is not None and spec.origin is not None,
            "smolmachines is not installed (the integration session installs it)")  # fmt: skip
    assert spec is not None
    assert spec.origin is not None
    lib = Path(spec.origin).parent / "libkrun.so"
    require(lib.exists(), f"{lib} is missing")
    require(Path("/usr/lib/x86_64-linux-gnu/libvirglrenderer.so.1").exists(),
            "libvirglrenderer1 is missing (apt-get install libvirglrenderer1)")  # fmt: skip
    env = {"AGENTBOX_LIBKRUN_LIBRARY": str(lib)}
    # the wheel's libkrun uses virglrenderer without linking it: alone it does not load
    alone = by_name(doctor_json(home.run(agentbox, "doctor", "--json", extra=env)))
    assert alone["libkrun"]["status"] == "fail"
    assert "undefined symbol" in str(alone["libkrun"]["found"])
    assert alone["libkrunfw"]["found"] == "not looked for: libkrun does not load"
    env["LD_PRELOAD"] = "libvirglrenderer.so.1"
    got = by_name(doctor_json(home.run(agentbox, "doctor", "--json", extra=env)))
    assert got["libkrun"]["status"] == "ok"
    assert got["libkrun"]["found"] == f"{lib} loads {lib.resolve()}"
    assert got["libkrunfw"]["status"] == "fail"
    assert got["libkrunfw"]["fix"] == f"export LD_LIBRARY_PATH={lib.parent}"
    env["LD_LIBRARY_PATH"] = str(lib.parent)
    found = by_name(doctor_json(home.run(agentbox, "doctor", "--json", extra=env)))
    assert found["libkrunfw"]["status"] == "ok"
    assert found["libkrunfw"]["found"].startswith("libkrunfw.so")
