import dataclasses
import json
from pathlib import Path

import pytest

from loftd.main import main
from loftd.runtime import Face, TaskRequest


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    return tmp_path


def config(home: Path, text: str) -> Path:
    path = home / ".config/loftd/loftd.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_paths_live_under_loftd(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["paths", "--json"], {"HOME": str(home)}) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["state_base"] == f"{home}/.local/state/loftd"
    assert report["config_file"] == f"{home}/.config/loftd/loftd.toml"


def test_backend_from_file_and_default(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--json"], {"HOME": str(home)}) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert settings["task-rootfs.backend"] == {"value": "btrfs-snapshot", "source": "default"}
    path = config(home, '[task-rootfs]\nbackend = "fuse-overlay"\n[state]\nlocation = "/srv"\n')
    assert main(["config", "--json"], {"HOME": str(home)}) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert settings["task-rootfs.backend"] == {
        "value": "fuse-overlay",
        "source": f"{path} [task-rootfs].backend",
    }
    assert settings["state.base"]["value"] == "/srv/loftd"
    assert settings["image"]["source"] == (
        "default: localhost/loftd:latest when present, else ghcr.io/zeroqn/loftd:latest"
    )


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        (
            '[task-rootfs]\nbackend = "btrfs"\n',
            [
                'task-rootfs.backend = "btrfs" is not a loftd task root backend',
                'hint: task-rootfs.backend must be "btrfs-snapshot" or "fuse-overlay"; say '
                "btrfs-snapshot ('btrfs' alone is ambiguous: reflink copies use btrfs too)",
            ],
        ),
        (
            '[task-rootfs]\nbackend = "reflink"\n',
            [
                'task-rootfs.backend = "reflink" is not a loftd task root backend',
                'hint: task-rootfs.backend must be "btrfs-snapshot" or "fuse-overlay"; choose '
                "one of: btrfs-snapshot, fuse-overlay",
            ],
        ),
        (
            "[task-rootfs]\nbackend = 1\n",
            [
                "task-rootfs.backend = 1 is an integer, not a string",
                'hint: task-rootfs.backend must be "btrfs-snapshot" or "fuse-overlay"',
            ],
        ),
        (
            "[task-rootfs]\nmode = 'x'\n",
            ['unknown key task-rootfs.mode = "x"', "hint: accepted keys in [task-rootfs]: backend"],
        ),
    ],
)
def test_bad_backend_config(
    home: Path, capsys: pytest.CaptureFixture[str], text: str, lines: list[str]
) -> None:
    path = config(home, text)
    assert main(["paths"], {"HOME": str(home)}) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"loftd: {path}: {lines[0]}", lines[1]]


def test_image_env(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--json"], {"HOME": str(home), "LOFTD_IMAGE": "x/y:1"}) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert settings["image"] == {"value": "x/y:1", "source": "env LOFTD_IMAGE"}


def test_backend_names_are_storage_backends() -> None:
    from agentbox_storage.backends import Backend
    from loftd.schema import BACKENDS

    assert [Backend(b) for b in BACKENDS] == [Backend.BTRFS_SNAPSHOT, Backend.FUSE_OVERLAY]


@pytest.mark.parametrize(
    ("explicit", "pull_latest", "local", "chosen"),
    [
        ("quay.io/me/box:1", False, True, ("quay.io/me/box:1", "missing")),
        (None, True, True, ("ghcr.io/x/loftd:latest", "always")),
        (None, False, True, ("localhost/loftd:latest", "never")),
        (None, False, False, ("ghcr.io/x/loftd:latest", "missing")),
    ],
)
def test_image_and_pull_policy(
    explicit: str | None, pull_latest: bool, local: bool, chosen: tuple[str, str]
) -> None:
    from loftd.launch import choose_image

    asked: list[bool] = []

    def local_exists() -> bool:
        asked.append(True)
        return local

    assert choose_image(explicit, pull_latest, local_exists, "ghcr.io/x/loftd:latest") == chosen
    assert bool(asked) == (explicit is None and not pull_latest)  # looked only when it matters


def _request(uid: int, tmp: Path) -> TaskRequest:
    from agentbox_storage.backends import Backend

    return TaskRequest(image="i", backend=Backend.AUTO, workspace=tmp, state_dir=tmp,
                       images_dir=tmp, task_id="t", command=(), uid=uid, gid=uid, ram_mib=1,
                       vcpus=1)  # fmt: skip


@pytest.mark.parametrize(
    ("graft", "uid", "expected"),
    [
        (False, 1000, ["X_WORKSPACE_TAG=ws", "X_HOST_UID=1000", "X_HOST_GID=1000"]),
        (False, 0, ["X_WORKSPACE_TAG=ws", "X_ENTER_AS_ROOT=1"]),
        # grafted rootless: the helper is in buildah unshare, where the user is root
        (True, 1000, ["X_HOST_UID=1000", "X_HOST_GID=1000", "X_ENTER_AS_ROOT=1"]),
        (True, 0, ["X_ENTER_AS_ROOT=1"]),
    ],
)  # fmt: skip
def test_guest_env_and_where_the_helper_runs(
    graft: bool, uid: int, expected: list[str], tmp_path: Path
) -> None:
    from loftd.plan import guest_env, helper_in_userns

    # grafted: /nix a host overlay, the workspace bind-mounted (no virtiofs tag)
    face = Face(name="x", library_env="X_LIB", env_prefix="X_", guest_init="bin/x",
                guest_argv=("x",), disks=(), workspace_tag=None if graft else "ws",
                workspace_tag_env="X_WORKSPACE_TAG", guest_env=("X_EXTRA=1",),
                nix_overlay_dir="nix-overlay" if graft else None)  # fmt: skip
    req = _request(uid, tmp_path)
    status = "X_GUEST_STATUS_FILE=/.agentbox-task/guest.status"
    assert list(guest_env(face, req)) == [*expected, status, "X_EXTRA=1"]
    assert helper_in_userns(face, req) == (graft and uid != 0)
    # --profile with --debug: the guest init prints its own report (it needs both)
    shown = dataclasses.replace(req, profile=True, debug=True)
    assert list(guest_env(face, shown)) == [*expected, status, "X_GUEST_PROFILE=1",
                                            "X_GUEST_DEBUG=1", "X_EXTRA=1"]  # fmt: skip


def test_the_helper_gets_the_loader_and_libkrun_log_variables() -> None:
    from loftd.plan import helper_env

    face = Face(name="x", library_env="X_LIB", env_prefix="X_", guest_init="bin/x",
                guest_argv=("x",), disks=(), workspace_tag="ws")  # fmt: skip
    environ = {"LD_LIBRARY_PATH": "/opt/krun/lib", "LD_PRELOAD": "libvirglrenderer.so.1",
               "RUST_LOG": "debug", "X_LIB": "ignored: the one found wins", "HOME": "/h",
               "LD_AUDIT": "", "SECRET": "s"}  # fmt: skip
    assert helper_env(face, "/opt/krun/lib/libkrun.so", environ) == {
        "LD_LIBRARY_PATH": "/opt/krun/lib", "LD_PRELOAD": "libvirglrenderer.so.1",
        "RUST_LOG": "debug", "X_LIB": "/opt/krun/lib/libkrun.so",
    }  # fmt: skip
    assert helper_env(face, "libkrun.so.1", {"LD_LIBRARY_PATH": ""}) == {"X_LIB": "libkrun.so.1"}


def test_the_home_directory_is_refused_as_the_workspace(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(home)
    env = {"HOME": str(home), "PATH": "/nonexistent"}  # nothing could run if it tried
    assert main(["--dry-run", "--", "true"], env) == 1
    err = capsys.readouterr().err
    assert f"refusing the workspace {home}: it is your home directory" in err, err
    assert "hint: cd into the project's own directory, or pass --allow-home" in err, err


def test_loftd_snapshots_its_own_state(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``loftd snapshot`` (the same verb as agentbox's, with loftd's names and state): its
    disk and /nix overlay upper are taken (full copies: --copy where the temp dir cannot
    reflink), restored byte for byte, and a run holding the overlay's lease keeps it out."""
    from agentbox_state.lock import FileLock
    from agentbox_state.workspace import Workspace

    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    state = home / ".local/state/loftd/workspaces" / Workspace.from_path(home / "proj").key
    (state / "nix-overlay/upper/store").mkdir(parents=True)
    (state / "nix-overlay/upper/store/pkg").write_bytes(b"v1")
    with open(state / "loftd-containers.raw", "wb") as f:
        f.truncate(2**20)
        f.write(b"disk v1")
    assert main(["snapshot", "create", "one", "--copy"], env) == 0
    assert capsys.readouterr().out == f"created snapshot one of {home}/proj\n"
    (state / "nix-overlay/upper/store/pkg").write_bytes(b"v2")
    assert main(["snapshot", "list"], env) == 0
    assert capsys.readouterr().out.startswith("one  ")
    assert main(["snapshot", "restore", "one", "--copy", "--discard-current"], env) == 0
    assert (state / "nix-overlay/upper/store/pkg").read_bytes() == b"v1"
    assert (state / "loftd-containers.raw").read_bytes()[:7] == b"disk v1"
    lease = FileLock(state / "nix-overlay/lease", what="a run")
    lease.acquire()  # as the helper holds it while the VM runs
    try:
        assert main(["snapshot", "create", "two", "--copy"], env) == 1
    finally:
        lease.release()
    err = capsys.readouterr().err
    assert err.startswith("loftd: refusing to snapshot it as 'two' while the project's state is "
                          "in use: nix-overlay/lease is held by pid ")  # fmt: skip
    assert err.endswith("hint: wait for that task to end (or stop it) and retry; nothing "
                        "changed\n")  # fmt: skip
    assert not (state / "snapshots/two").exists()
    assert main(["snapshot", "delete", "nope"], env) == 1
    assert "hint: loftd snapshot list shows them" in capsys.readouterr().err
