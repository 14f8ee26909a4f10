"""The decisions the guest init makes, as tables (no effects)."""

from __future__ import annotations

import pytest

from agentbox_guest_init import contract, identity, podman_prep, runtime, status
from agentbox_guest_init.contract import ContractError
from agentbox_guest_init.nix import overlay_options
from agentbox_guest_init.shellenv import shell_env

PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP = "root:x:0:\nkvm:x:104:dev\nusers:x:100:\n"


def test_default_contract() -> None:
    c = contract.parse({})
    assert (c.host_uid, c.host_gid, c.enter_as_root, c.libkrun) == (None, None, False, False)
    assert (c.nix_disk_id, c.nix_disk_label) == ("agentbox-nix", "AGENTBOX_NIX")
    assert (c.containers_disk_id, c.containers_disk_label) == (
        "agentbox-containers", "AGENTBOX_CONTAINERS",
    )  # fmt: skip
    assert c.workspace_target == "/workspace"


def test_contract_values() -> None:
    c = contract.parse({"AGENTBOX_HOST_UID": "1000", "AGENTBOX_HOST_GID": "1001",
                        "AGENTBOX_LIBKRUN_NIX_OVERLAY": "1", "AGENTBOX_ENTER_AS_ROOT": "0",
                        "AGENTBOX_LIBKRUN_NIX_DISK_LABEL": "X"})  # fmt: skip
    assert (c.host_uid, c.host_gid, c.nix_overlay, c.libkrun, c.nix_disk_label) == (
        1000, 1001, True, True, "X",
    )  # fmt: skip
    loftd = contract.parse({"LOFTD_HOST_UID": "5", "LOFTD_CONTAINERS_STORAGE": "1"}, "LOFTD_")
    assert (loftd.host_uid, loftd.containers_storage, loftd.var("HOST_UID")) == (
        5, True, "LOFTD_HOST_UID",
    )  # fmt: skip
    host = contract.parse({"LOFTD_NIX_HOST_OVERLAY": "1"}, "LOFTD_")
    assert (host.nix_host_overlay, host.nix_overlay, host.libkrun) == (True, False, True)
    assert contract.parse({"AGENTBOX_NIX_HOST_OVERLAY": "1"}).nix_host_overlay is False
    with pytest.raises(ContractError, match="LOFTD_NIX_HOST_OVERLAY='yes' is not 1 or 0"):
        contract.parse({"LOFTD_NIX_HOST_OVERLAY": "yes"}, "LOFTD_")


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"AGENTBOX_HOST_UID": "abc"}, "AGENTBOX_HOST_UID='abc' is not a numeric id"),
        ({"AGENTBOX_HOST_UID": "-1"}, "AGENTBOX_HOST_UID='-1' is not a numeric id"),
        ({"AGENTBOX_HOST_GID": "4294967295"}, "AGENTBOX_HOST_GID='4294967295' is not a numeric id"),
        ({"AGENTBOX_HOST_UID": "\u0661"}, "AGENTBOX_HOST_UID='\u0661' is not a numeric id"),
        ({"AGENTBOX_ENTER_AS_ROOT": "yes"}, "AGENTBOX_ENTER_AS_ROOT='yes' is not 1 or 0"),
        ({"AGENTBOX_LIBKRUN_NIX_OVERLAY": ""}, "AGENTBOX_LIBKRUN_NIX_OVERLAY='' is not 1 or 0"),
        ({"AGENTBOX_MICROVM_WORKSPACE_TARGET": "ws"},
         "AGENTBOX_MICROVM_WORKSPACE_TARGET='ws' is not an absolute path"),
        ({"AGENTBOX_LIBKRUN_NIX_DISK_LABEL": "a\nb"},
         "AGENTBOX_LIBKRUN_NIX_DISK_LABEL contains a control character"),
    ],
)  # fmt: skip
def test_malformed_contract(env: dict[str, str], reason: str) -> None:
    with pytest.raises(ContractError) as caught:
        contract.parse(env)
    assert caught.value.reason == reason
    assert caught.value.code == 3


def test_contract_variable_names() -> None:
    names = contract.contract_vars()
    assert "AGENTBOX_HOST_UID" in names
    assert "AGENTBOX_LIBKRUN_CONTAINERS_STORAGE" in names
    assert all(n.startswith("LOFTD_") for n in contract.contract_vars("LOFTD_"))


def test_dev_user_entries_are_idempotent() -> None:
    once = identity.passwd_with_dev(PASSWD, 1000, 1000, "/usr/bin/fish")
    assert once.endswith("dev:x:1000:1000:dev user:/home/dev:/usr/bin/fish\n")
    assert identity.passwd_with_dev(once, 1000, 1000, "/usr/bin/fish") == once
    moved = identity.passwd_with_dev(once, 1234, 1234, "/bin/bash")
    assert moved.count("\ndev:") == 1
    assert "dev:x:1234:1234:dev user:/home/dev:/bin/bash" in moved
    assert moved.startswith(PASSWD)
    g = identity.group_with_dev(GROUP, 1000)
    assert identity.group_with_dev(g, 1000) == g
    assert g.endswith("dev:x:1000:\n")


def test_supplementary_groups() -> None:
    assert identity.supplementary_groups(GROUP, "dev", 1000) == [1000, 104]
    assert identity.supplementary_groups(GROUP, "other", 7) == [7]


@pytest.mark.parametrize(
    ("env", "euid", "ids"),
    [
        ({"AGENTBOX_HOST_UID": "1000", "AGENTBOX_HOST_GID": "1000"}, 0, (1000, 1000)),
        ({"AGENTBOX_ENTER_AS_ROOT": "1"}, 0, (0, 0)),
        ({"AGENTBOX_HOST_UID": "1000", "AGENTBOX_HOST_GID": "1000",
          "AGENTBOX_ENTER_AS_ROOT": "1"}, 0, (0, 0)),
    ],
)  # fmt: skip
def test_resolve_ids(env: dict[str, str], euid: int, ids: tuple[int, int]) -> None:
    assert runtime.resolve_ids(contract.parse(env), euid) == ids


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({}, "AGENTBOX_HOST_UID and AGENTBOX_HOST_GID are required when the guest init starts "
             "as root"),
        ({"AGENTBOX_HOST_UID": "0", "AGENTBOX_HOST_GID": "0"},
         "AGENTBOX_HOST_UID/AGENTBOX_HOST_GID must not be 0 (dev is not root)"),
    ],
)  # fmt: skip
def test_resolve_ids_refusals(env: dict[str, str], reason: str) -> None:
    with pytest.raises(ContractError) as caught:
        runtime.resolve_ids(contract.parse(env), 0)
    assert caught.value.reason == reason


def test_shell_env_for_dev_in_libkrun() -> None:
    env = shell_env({"PATH": "/usr/bin:/bin", "AGENTBOX_HOST_UID": "1000", "TERM": "xterm",
                     "LOFTD_X": "1"}, uid=1000, as_root=False, shell="/usr/bin/fish",
                    containers_storage=True, nix_daemon=True)  # fmt: skip
    assert env == {
        "TERM": "xterm",
        "USER": "dev", "LOGNAME": "dev", "HOME": "/home/dev", "SHELL": "/usr/bin/fish",
        "XDG_CONFIG_HOME": "/home/dev/.config", "XDG_DATA_HOME": "/home/dev/.local/share",
        "XDG_STATE_HOME": "/home/dev/.local/state", "XDG_CACHE_HOME": "/home/dev/.cache",
        "XDG_RUNTIME_DIR": "/run/user/1000", "TMPDIR": "/home/dev/.cache/tmp",
        "SCCACHE_DIR": "/home/dev/.cache/sccache",
        "PATH": "/run/agentbox/idmap-bin:/usr/bin:/bin:/nix/var/nix/profiles/default/bin",
        "DOCKER_HOST": "unix:///run/user/1000/podman/podman.sock",
        "NIX_REMOTE": "unix:///nix/var/nix/daemon-socket/socket",
    }  # fmt: skip


def test_shell_env_for_root_in_a_container() -> None:
    env = shell_env({}, uid=0, as_root=True, shell="/bin/bash", containers_storage=False,
                    nix_daemon=False)  # fmt: skip
    assert (env["USER"], env["HOME"], env["XDG_RUNTIME_DIR"]) == ("root", "/root", "/run/user/0")
    assert "DOCKER_HOST" not in env
    assert "NIX_REMOTE" not in env
    assert env["PATH"].startswith("/usr/local/sbin:")


def test_resolv_conf() -> None:
    text = "nameserver 10.0.0.1\nsearch x\nnameserver 169.254.1.1\n"
    assert runtime.resolv_conf_with(text, "169.254.1.1") == (
        "nameserver 169.254.1.1\nnameserver 10.0.0.1\nsearch x\n"
    )
    assert runtime.resolv_conf_with("", "169.254.1.1") == "nameserver 169.254.1.1\n"


def test_podman_config_and_subids() -> None:
    files = podman_prep.config_files(1000)
    assert files["storage.conf"] == (
        '[storage]\ndriver = "btrfs"\ngraphroot = "/home/dev/.local/share/containers/storage"\n'
        'runroot = "/run/user/1000/containers"\n'
    )
    assert 'cgroups = "disabled"' in files["containers.conf"]
    root = podman_prep.config_files(0)["storage.conf"]  # the shell enters as root
    assert root == ('[storage]\ndriver = "btrfs"\ngraphroot = "/var/lib/containers/storage"\n'
                    'runroot = "/run/containers/storage"\n')  # fmt: skip
    assert (podman_prep.config_dir(0), podman_prep.config_dir(1000)) == (
        "/etc/containers", "/home/dev/.config/containers",
    )  # fmt: skip
    assert podman_prep.subid_line(1000) == "dev:100000:65536\n"
    with pytest.raises(contract.GuestError, match="inside the sub-id range"):
        podman_prep.subid_line(100500)


def test_overlay_options() -> None:
    assert overlay_options("/nix", "/run/agentbox/nix-disk") == (
        "lowerdir=/nix,upperdir=/run/agentbox/nix-disk/upper,workdir=/run/agentbox/nix-disk/work"
    )


def test_status_round_trip_and_transitions(tmp_path: object) -> None:
    s = status.StatusFile(str(tmp_path), "podman-prep")
    assert s.read() == {"state": "not-started"}
    assert not s.transition("ready")  # must run first
    assert s.transition("running", pid=42)
    assert not s.transition("ready", pid=43)  # only the worker that runs it
    assert s.transition("failed", pid=42, error="no disk\nat all \\ really")
    fields = s.read()
    assert (fields["state"], fields["pid"], fields["error"]) == (
        "failed", "42", "no disk\nat all \\ really",
    )  # fmt: skip
    assert not s.transition("running", pid=44)
    assert s.wait(timeout=0.1)["state"] == "failed"


def test_dev_wins_lookups_by_id_over_podmans_keep_id_entry() -> None:
    text = PASSWD + "me:x:1000:1000::/home/me:/bin/sh\n"
    out = identity.passwd_with_dev(text, 1000, 1000, "/bin/sh")
    lines = out.splitlines()
    assert lines[-2:] == [
        "dev:x:1000:1000:dev user:/home/dev:/bin/sh",
        "me:x:1000:1000::/home/me:/bin/sh",
    ]
    assert identity.passwd_with_dev(out, 1000, 1000, "/bin/sh") == out
    groups = identity.group_with_dev("root:x:0:\nme:x:1000:\n", 1000)
    assert groups == "root:x:0:\ndev:x:1000:\nme:x:1000:\n"


def test_microvm_workspace_mount_decision() -> None:
    c = contract.parse({"AGENTBOX_MICROVM_WORKSPACE_TAG": "agentbox-workspace"})
    assert runtime.workspace_mount_needed(c, "proc /proc proc rw 0 0\n")
    assert not runtime.workspace_mount_needed(c, "agentbox-workspace /workspace virtiofs rw 0 0\n")
    with pytest.raises(contract.GuestError) as caught:
        runtime.workspace_mount_needed(c, "/dev/vda /workspace ext4 rw 0 0\n")
    assert caught.value.reason == (
        "/workspace is already a ext4 mount of /dev/vda, not agentbox-workspace"
    )
    with pytest.raises(ContractError) as missing:
        runtime.workspace_mount_needed(contract.parse({}), "")
    assert missing.value.reason == "AGENTBOX_MICROVM_WORKSPACE_TAG is required for microvm"


def test_microvm_shares_are_mounted_after_the_workspace_in_order() -> None:
    """mount(8) ``-t virtiofs [-o ro] TAG DIR``: the workspace, then each share of
    AGENTBOX_MICROVM_SHARES (an agent's git dir read-only, then what a commit writes inside
    it), leaving out what /proc/self/mounts already shows."""
    shares = ('[["agentbox-workspace-1","/src/app/.git",true],'
              '["agentbox-workspace-2","/src/app/.git/objects",false]]')  # fmt: skip
    c = contract.parse({"AGENTBOX_MICROVM_WORKSPACE_TAG": "agentbox-workspace",
                        "AGENTBOX_MICROVM_SHARES": shares})  # fmt: skip
    assert c.shares == (("agentbox-workspace-1", "/src/app/.git", True),
                        ("agentbox-workspace-2", "/src/app/.git/objects", False))  # fmt: skip
    assert runtime.share_mounts(c, "proc /proc proc rw 0 0\n") == [
        ["mount", "-t", "virtiofs", "agentbox-workspace", "/workspace"],
        ["mount", "-t", "virtiofs", "-o", "ro", "agentbox-workspace-1", "/src/app/.git"],
        ["mount", "-t", "virtiofs", "agentbox-workspace-2", "/src/app/.git/objects"],
    ]
    mounted = "agentbox-workspace /workspace virtiofs rw 0 0\n" \
        "agentbox-workspace-1 /src/app/.git virtiofs ro 0 0\n"  # fmt: skip
    assert runtime.share_mounts(c, mounted) == [
        ["mount", "-t", "virtiofs", "agentbox-workspace-2", "/src/app/.git/objects"],
    ]
    assert runtime.share_mounts(contract.parse({"AGENTBOX_MICROVM_WORKSPACE_TAG": "w"}), "") == [
        ["mount", "-t", "virtiofs", "w", "/workspace"],
    ]


@pytest.mark.parametrize("value", [
    "not json", '{"a": 1}', '[["t", "relative", true]]', '[["", "/x", true]]',
    '[["t", "/x", "yes"]]', '[["t", "/x", true], ["t", "/y", false]]', '[["t", "/x"]]',
], ids=["not-json", "object", "relative", "empty-tag", "not-bool", "same-tag",
        "short"])  # fmt: skip
def test_bad_microvm_shares_are_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ContractError) as caught:
        contract.parse({"AGENTBOX_MICROVM_SHARES": value})
    assert caught.value.reason.startswith("AGENTBOX_MICROVM_SHARES")


def test_the_bundles_loader_variables_are_undone() -> None:
    from agentbox_guest_init.shellenv import without_bundle

    bundle = "/usr/lib/agentbox-guest-init/_internal"
    pyi = {"_PYI_ARCHIVE_FILE": "/x", "_PYI_LINUX_PROCESS_NAME": "x",
           "_PYI_PARENT_PROCESS_LEVEL": "1", "PATH": "/bin"}  # fmt: skip
    # LD_LIBRARY_PATH was unset before the bootloader: unset again
    assert without_bundle({**pyi, "LD_LIBRARY_PATH": bundle}) == {"PATH": "/bin"}
    # it was set: the saved original comes back (also when it was empty)
    assert without_bundle({**pyi, "LD_LIBRARY_PATH": f"{bundle}:/opt/lib",
                           "LD_LIBRARY_PATH_ORIG": "/opt/lib"}) == {
        "PATH": "/bin", "LD_LIBRARY_PATH": "/opt/lib"}  # fmt: skip
    assert without_bundle({"LD_LIBRARY_PATH": bundle, "LD_LIBRARY_PATH_ORIG": ""}) == {
        "LD_LIBRARY_PATH": ""
    }
