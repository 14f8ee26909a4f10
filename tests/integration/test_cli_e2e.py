"""The installed ``agentbox`` and ``loftd`` commands, run as real processes."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest

from agentbox_testing import require

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conftest import Home


def test_two_projects_named_app_get_different_state(home: Home, agentbox: Path) -> None:
    first = home.root / "clients" / "app"
    second = home.root / "personal" / "app"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    a = json.loads(home.run(agentbox, "paths", "--json", cwd=first).stdout)
    b = json.loads(home.run(agentbox, "paths", "--json", cwd=second).stdout)
    assert a["workspace_slug"] == b["workspace_slug"] == "app"
    assert a["workspace_state_dir"] != b["workspace_state_dir"]
    for report, project in ((a, first), (b, second)):
        assert report["workspace"] == str(project)
        assert report["workspace_state_dir"].startswith(
            f"{home.home}/.local/state/agentbox/workspaces/app-"
        )
    assert a["sccache_dir"] == b["sccache_dir"] == f"{home.home}/.local/state/agentbox/sccache"


def test_paths_and_config_create_nothing(
    home: Home, agentbox: Path, loftd: Path, tree: Callable[[Path], set[str]]
) -> None:
    before = tree(home.root)
    for cmd in (agentbox, loftd):
        for verb in ("paths", "config"):
            assert home.run(cmd, verb).returncode == 0
            assert home.run(cmd, verb, "--json").returncode == 0
    assert tree(home.root) == before


def test_state_location_from_config(home: Home, agentbox: Path) -> None:
    cfg = home.config("agentbox", f'[state]\nlocation = "{home.root}/elsewhere"\n')
    out = home.run(agentbox, "config", "--json")
    assert out.returncode == 0, out.stderr
    settings = json.loads(out.stdout)["settings"]
    assert settings["state.base"] == {
        "value": f"{home.root}/elsewhere/agentbox",
        "source": f"{cfg} [state].location",
    }
    paths = json.loads(home.run(agentbox, "paths", "--json").stdout)
    assert paths["sccache_dir"] == f"{home.root}/elsewhere/agentbox/sccache"


BAD_CONFIGS = [
    pytest.param("[state\n", "is not valid TOML: Expected ']' at the end of a table "
                 "declaration (at line 1, column 7)", id="unparseable"),
    pytest.param("[sate]\n", "unknown table [sate]", id="unknown-table"),
    pytest.param("[state]\nplace = '/x'\n", 'unknown key state.place = "/x"', id="unknown-key"),
    pytest.param("[state]\nlocation = true\n", "state.location = true is a boolean, not a string",
                 id="wrong-type"),
    pytest.param("[state]\nlocation = 'x/y'\n", 'state.location = "x/y" is a relative path',
                 id="relative"),
    pytest.param("[state]\nlocation = ''\n", 'state.location = "" is empty', id="empty"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS)
@pytest.mark.parametrize("app", ["agentbox", "loftd"])
def test_bad_config_file_key_value_exit_1(
    home: Home, app: str, text: str, message: str, agentbox: Path, loftd: Path
) -> None:
    cfg = home.config(app, text)
    out = home.run(agentbox if app == "agentbox" else loftd, "paths")
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert lines[0] == f"{app}: {cfg}: {message}"
    assert lines[1].startswith("hint: ")
    assert len(lines) == 2, "no traceback without --debug"


def test_loftd_backend_config(home: Home, loftd: Path) -> None:
    cfg = home.config("loftd", "[task-rootfs]\nbackend = 'btrfs'\n")
    out = home.run(loftd, "config")
    assert out.returncode == 1
    assert out.stderr.splitlines()[0] == (
        f'loftd: {cfg}: task-rootfs.backend = "btrfs" is not a loftd task root backend'
    )
    home.config("loftd", "[task-rootfs]\nbackend = 'fuse-overlay'\n")
    out = home.run(loftd, "config", "--json")
    settings = json.loads(out.stdout)["settings"]
    assert settings["task-rootfs.backend"]["value"] == "fuse-overlay"


def test_debug_shows_the_traceback(home: Home, agentbox: Path) -> None:
    home.config("agentbox", "[state]\nlocation = 1\n")
    out = home.run(agentbox, "--debug", "paths")
    assert out.returncode == 1
    assert out.stderr.startswith("Traceback (most recent call last):")
    assert "agentbox_state.errors.ConfigError" in out.stderr


def test_usage_errors_exit_2(home: Home, agentbox: Path) -> None:
    out = home.run(agentbox, "--image", "a", "paths", "--pull-latest")
    assert (out.returncode, out.stderr) == (
        2,
        "agentbox: --pull-latest cannot be combined with an explicit image (flag --image)\n"
        "hint: --pull-latest pulls the published image; drop it, or drop the explicit image\n",
    )
    out = home.run(agentbox, "--pull-latest", "config", AGENTBOX_IMAGE="a/b")
    assert out.returncode == 2
    assert "(env AGENTBOX_IMAGE)" in out.stderr


def test_profile_report_goes_to_stderr_only_with_debug(home: Home, agentbox: Path) -> None:
    quiet = home.run(agentbox, "--profile", "paths")
    assert quiet.returncode == 0
    assert quiet.stderr == ""
    loud = home.run(agentbox, "paths", "--profile", "--debug")
    assert loud.returncode == 0
    assert loud.stderr.startswith("agentbox host profile\n")
    assert loud.stdout == quiet.stdout


@pytest.mark.parametrize(
    ("script", "dist"),
    [
        ("agentbox", "agentbox-cli"),
        ("loftd", "loftd"),
        ("agentbox-guest-init", "agentbox-guest-init"),
    ],
)
def test_versions(home: Home, bin_dir: Path, script: str, dist: str) -> None:
    path = bin_dir / script
    require(path.exists(), f"{script} is not installed in {bin_dir}")
    out = home.run(path, "--version")
    assert (out.returncode, out.stdout) == (0, f"{script} {version(dist)}\n")


def test_guest_init_rejects_unknown_verbs(home: Home, bin_dir: Path) -> None:
    out = home.run(bin_dir / "agentbox-guest-init", "explode")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1


STARTUP_PROBE = """
import sys
from agentbox_cli.main import main
code = main(sys.argv[1:])
heavy = ("podman", "dataclasses_json", "dataclasses", "pathlib", "typing", "argparse", "tomllib",
         "hashlib", "subprocess")
print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


# What each may load of those (issue 13, within its 3x start-up budget): resolved state paths
# are pathlib objects, a workspace is identified with hashlib, and the --json reports are
# dataclasses-json records; --help loads none of them.
@pytest.mark.parametrize(
    ("argv", "loaded"),
    [
        (["--help"], []),
        (["paths"], ["hashlib", "pathlib"]),
        (["config"], ["pathlib"]),
        (["config", "--json"], ["dataclasses", "dataclasses_json", "pathlib", "typing"]),
    ],
)
def test_start_up_path_stays_light(home: Home, argv: list[str], loaded: list[str]) -> None:
    out = home.run(sys.executable, "-c", STARTUP_PROBE, *argv)
    assert out.returncode == 0, out.stderr
    assert out.stderr == f"{loaded}\n"


@pytest.mark.root
def test_as_an_ordinary_user(agentbox: Path, bin_dir: Path, test_user: str) -> None:
    """The real user-facing path: a non-root user with their own HOME and no XDG variables."""
    try:
        user = pwd.getpwnam(test_user)
    except KeyError:
        user = None
    runuser = shutil.which("runuser")
    require(
        os.geteuid() == 0 and user is not None and runuser is not None,
        f"needs root, runuser and the user {test_user} (scripts/test creates it: useradd -m)",
    )
    assert user is not None
    assert runuser is not None
    # pytest's tmp_path sits in a 0700 directory of root's; the user needs a project it can enter.
    with tempfile.TemporaryDirectory(prefix="agentbox-e2e-") as tmp:
        project = Path(tmp) / "proj"
        project.mkdir()
        Path(tmp).chmod(0o755)
        out = subprocess.run(
            [runuser, "-u", test_user, "--", "env", "-i", f"HOME={user.pw_dir}",
             f"PATH={bin_dir}:/usr/bin:/bin", str(agentbox), "paths", "--json"],
            cwd=project, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["state_base"] == f"{user.pw_dir}/.local/state/agentbox"
    assert report["workspace"] == str(project)


def test_closed_pipe_is_quiet(home: Home, agentbox: Path) -> None:
    """`agentbox paths | head -0`: no traceback, no 'internal error' when the reader is gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left before agentbox writes a byte
    try:
        out = subprocess.run(
            [agentbox, "paths"], stdout=write_end, stderr=subprocess.PIPE, text=True,
            cwd=home.project, env=home.env, check=False, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert (out.returncode, out.stderr) == (141, "")
