import json
import stat
from pathlib import Path

import pytest

from agentbox_krun import launchconf
from agentbox_krun.errors import LaunchConfError
from agentbox_krun.launchconf import Disk, LaunchConf, Mount, NixOverlay, Share

CONF = LaunchConf(
    task_rootfs="/s/tasks/t1/rootfs", ram_mib=4096, vcpus=2, workdir="/workspace",
    exec_path="/bin/agentbox-guest-init",
    argv=("agentbox-guest-init", "microvm", "enter", "--", "sh", "-c", "echo 'x=y'\n"),
    env=("AGENTBOX_HOST_UID=1000", "TERM=xterm"),
    disks=(Disk("agentbox-nix", "/s/n.raw", False), Disk("agentbox-containers", "/s/c.raw", True)),
    workspace_source="/src/app", workspace_tag="agentbox-workspace", workspace_target="/workspace",
)  # fmt: skip
LOFTD = CONF._replace(
    nix_overlay=NixOverlay("/c/rootfs/nix", "/s/up", "/s/wk", "/s/lease"),
    init_log=True, task_lock="/s/tasks/t1/.task.lock", nested_virt=True,
    image="localhost/loftd:latest",
    workspace_source=None, workspace_tag=None, workspace_target=None,
    mounts=(Mount("/src/app", "/workspace", False), Mount("/t", "/t", True)),
)  # fmt: skip


def test_the_microvm_document_round_trips_whole(tmp_path: Path) -> None:
    path = tmp_path / "launch.conf"
    launchconf.write(CONF, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert launchconf.read(path) == CONF
    assert json.loads(path.read_text()) == {
        "task_rootfs": "/s/tasks/t1/rootfs", "ram_mib": 4096, "vcpus": 2,
        "workdir": "/workspace", "exec_path": "/bin/agentbox-guest-init",
        "argv": ["agentbox-guest-init", "microvm", "enter", "--", "sh", "-c", "echo 'x=y'\n"],
        "env": ["AGENTBOX_HOST_UID=1000", "TERM=xterm"],
        "disks": [{"id": "agentbox-nix", "path": "/s/n.raw", "readonly": False},
                  {"id": "agentbox-containers", "path": "/s/c.raw", "readonly": True}],
        "mounts": [], "shares": [], "init_log": False, "nested_virt": False,
        "workspace_source": "/src/app", "workspace_tag": "agentbox-workspace",
        "workspace_target": "/workspace",
    }  # fmt: skip
    assert path.read_text().splitlines()[:2] == ["{", '  "task_rootfs": "/s/tasks/t1/rootfs",']
    agent = CONF._replace(
        shares=(
            Share("agentbox-workspace-1", "/src/app/.git", True),
            Share("agentbox-workspace-2", "/src/app/.git/objects"),
        )
    )
    assert launchconf.parse(launchconf.render(agent)) == agent
    assert launchconf.document(agent)["shares"] == [
        {"tag": "agentbox-workspace-1", "source": "/src/app/.git", "readonly": True},
        {"tag": "agentbox-workspace-2", "source": "/src/app/.git/objects", "readonly": False},
    ]


def test_the_loftd_document_round_trips_whole(tmp_path: Path) -> None:
    path = tmp_path / "launch.conf"
    launchconf.write(LOFTD, path)
    assert launchconf.read(path) == LOFTD
    doc = json.loads(path.read_text())
    assert doc["nix_overlay"] == {"lower": "/c/rootfs/nix", "upper": "/s/up", "work": "/s/wk",
                                  "lease": "/s/lease"}  # fmt: skip
    assert doc["mounts"] == [{"source": "/src/app", "target": "/workspace", "readonly": False},
                             {"source": "/t", "target": "/t", "readonly": True}]  # fmt: skip
    assert (doc["init_log"], doc["nested_virt"], doc["task_lock"], doc["image"]) == (
        True, True, "/s/tasks/t1/.task.lock", "localhost/loftd:latest",
    )  # fmt: skip
    assert "workspace_tag" not in doc  # unset optional paths are left out
    plain = launchconf.parse(launchconf.render(CONF))  # the microvm shape: none of them
    assert (plain.nix_overlay, plain.mounts, plain.init_log, plain.nested_virt) == (
        None, (), False, False,
    )  # fmt: skip


def test_any_path_round_trips_and_the_file_is_ascii() -> None:
    odd = CONF._replace(workdir="/wörk", argv=("\udcff", 'a"b\\c'))
    text = launchconf.render(odd)
    assert text.isascii()
    assert launchconf.parse(text) == odd


MINIMAL = {"task_rootfs": "/r", "ram_mib": 1, "vcpus": 1, "workdir": "/", "exec_path": "/x"}


def test_only_the_required_keys_give_the_defaults() -> None:
    conf = launchconf.parse(json.dumps(MINIMAL))
    assert conf == LaunchConf(task_rootfs="/r", ram_mib=1, vcpus=1, workdir="/", exec_path="/x")


DISK = {"id": "a", "path": "/p", "readonly": False}
MOUNT = {"source": "/p", "target": "/w", "readonly": False}
NIX = {"lower": "/l", "upper": "/u", "work": "/w", "lease": "/e"}
SHARE = {"tag": "t", "source": "/g", "readonly": True}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"color": 1}, "unknown key 'color'"),
        ({"ram_mib": "4G"}, "ram_mib is a string, not a whole number"),
        ({"vcpus": -1}, "vcpus is -1, not a whole number >= 0"),
        ({"vcpus": True}, "vcpus is a boolean, not a whole number"),
        ({"workdir": None}, "workdir is null, not a string"),
        ({"argv": "sh"}, "argv is a string, not a list"),
        ({"env": ["A=1", 2]}, "env[1] is a whole number, not a string"),
        ({"disks": [DISK, {"id": "b"}]}, "disks[1] lacks path, readonly"),
        ({"disks": [{**DISK, "readonly": "yes"}]},
         "disks[0].readonly is a string, not true or false"),
        ({"disks": [{**DISK, "size": 1}]}, "unknown key 'disks[0].size'"),
        ({"disks": ["/p"]}, "disks[0] is a string, not an object"),
        ({"init_log": 1}, "init_log is a whole number, not true or false"),
        ({"nested_virt": "auto"}, "nested_virt is a string, not true or false"),
        ({"mounts": [{"source": "/p", "target": "/w"}]}, "mounts[0] lacks readonly"),
        *(({"mounts": [{**MOUNT, "target": target}]},
           f"mounts[0].target {target!r} is not a normalised absolute guest path below /")
          for target in ("workspace", "/a/../etc", "/", "//x", "/w/")),
        ({"shares": [{"tag": "t", "readonly": True}]}, "shares[0] lacks source"),
        ({"shares": [{**SHARE, "tag": ""}]}, "shares[0].tag '' is empty or not unique"),
        ({"shares": [SHARE, {**SHARE, "source": "/h"}]},
         "shares[1].tag 't' is empty or not unique"),
        ({"workspace_tag": "t", "shares": [SHARE]}, "shares[0].tag 't' is empty or not unique"),
        ({"shares": [{**SHARE, "readonly": "no"}]},
         "shares[0].readonly is a string, not true or false"),
        ({"nix_overlay": {"lower": "/l", "work": "/w"}}, "nix_overlay lacks upper, lease"),
        ({"nix_overlay": {**NIX, "upper": 1}}, "nix_overlay.upper is a whole number, not a string"),
        ({"nix_overlay": [NIX]}, "nix_overlay is a list, not an object"),
        ({"task_lock": 1}, "task_lock is a whole number, not a string"),
    ],
)  # fmt: skip
def test_refusals_name_the_key(extra: dict[str, object], message: str) -> None:
    with pytest.raises(LaunchConfError) as caught:
        launchconf.parse(json.dumps({**MINIMAL, **extra}))
    assert caught.value.message == f"launch.conf: {message}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task_rootfs=2f72\n", "launch.conf:1: not JSON: Expecting value (column 1)"),
        ('{"vcpus": 1,\n "vcpus": 2}', "launch.conf: duplicate key 'vcpus'"),
        ("[1]", "launch.conf: the document is a list, not an object"),
        ('{"workdir": "/"}', "launch.conf: missing required keys: task_rootfs, ram_mib, vcpus, "
                             "exec_path"),
    ],
)  # fmt: skip
def test_documents_that_are_not_one(text: str, message: str) -> None:
    with pytest.raises(LaunchConfError) as caught:
        launchconf.parse(text)
    assert caught.value.message == message


def test_the_reader_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "launch.conf"
    path.write_text(json.dumps({**MINIMAL, "vcpus": "2"}))
    with pytest.raises(LaunchConfError) as caught:
        launchconf.read(path)
    assert caught.value.message == f"{path}: vcpus is a string, not a whole number"
