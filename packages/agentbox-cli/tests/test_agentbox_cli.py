import itertools
import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest

from agentbox_cli import __version__
from agentbox_cli.main import main


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    return tmp_path


def test_version_matches_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    assert __version__ == version("agentbox-cli")
    assert main(["--version"], {}) == 0
    assert capsys.readouterr().out == f"agentbox {__version__}\n"


def test_help_lists_the_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"], {}) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: agentbox ")
    for word in ("paths", "config", "--image", "--pull-latest", "--debug", "--profile",
                 "--root", "--dry-run", "AGENTBOX_IMAGE"):  # fmt: skip
        assert word in out


def test_paths(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"HOME": str(home), "XDG_STATE_HOME": str(home / "st")}
    assert main(["paths", "--json"], env) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["state_base"] == f"{home}/st/agentbox"
    assert report["workspace_slug"] == "proj"
    assert report["workspace_state_dir"].startswith(f"{home}/st/agentbox/workspaces/proj-")
    assert report["sccache_dir"] == f"{home}/st/agentbox/sccache"


def test_config_image_sources(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--json"], {"HOME": str(home)}) == 0
    image = json.loads(capsys.readouterr().out)["settings"]["image"]
    assert image == {
        "value": None,
        "source": "default: localhost/agentbox:latest when present, else "
        "ghcr.io/zeroqn/agentbox:latest",
    }
    assert main(["--image", "a/b", "config", "--json"], {"HOME": str(home),
                                                         "AGENTBOX_IMAGE": "c/d"}) == 0  # fmt: skip
    image = json.loads(capsys.readouterr().out)["settings"]["image"]
    assert image == {"value": "a/b", "source": "flag --image"}


def test_bad_config_exit_1(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = home / ".config/agentbox/agentbox.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("[state]\nlocation = 42\n")
    assert main(["config"], {"HOME": str(home)}) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        f"agentbox: {cfg}: state.location = 42 is an integer, not a string"
    )


def test_config_shows_an_environment_override_as_its_source(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"HOME": str(home)}
    assert main(["config", "--json"], env) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert settings["container.sidecar_idle_grace"] == {"value": 120, "source": "default"}
    assert main(["config", "--json"], {**env, "AGENTBOX_SIDECAR_IDLE_GRACE": "5"}) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert settings["container.sidecar_idle_grace"] == {
        "value": 5, "source": "env AGENTBOX_SIDECAR_IDLE_GRACE"}  # fmt: skip
    assert main(["config"], {**env, "AGENTBOX_SIDECAR_IDLE_GRACE": "5"}) == 0
    shown = capsys.readouterr().out
    assert re.search(r"container\.sidecar_idle_grace: +5 +\[env AGENTBOX_SIDECAR_IDLE_GRACE\]",
                     shown), shown  # fmt: skip
    assert main(["config"], {**env, "AGENTBOX_SIDECAR_IDLE_GRACE": "soon"}) == 2
    err = capsys.readouterr().err
    assert err.startswith("agentbox: AGENTBOX_SIDECAR_IDLE_GRACE='soon' is a string, not a whole")


@pytest.mark.parametrize("mode", [["container"], ["microvm"], [], ["container", "--", "ls"]])
def test_every_mode_refuses_the_home_directory_as_its_workspace(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    mode: list[str],
) -> None:  # fmt: skip
    # cd ~ && agentbox ...: the sandbox would see ~/.ssh; refused before any process runs
    monkeypatch.chdir(home)
    env = {"HOME": str(home), "PATH": "/nonexistent"}  # nothing could run if it tried
    code = main(["--dry-run", *mode], env)
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"refusing the workspace {home}: it is your home directory" in err, err
    assert "hint: cd into the project's own directory, or pass --allow-home" in err, err
    assert not (home / ".local").exists()  # nothing made


@pytest.mark.parametrize(
    ("argv", "config", "said"),
    [
        (["--net", "closed"], "",
         "agentbox: --net: unknown network mode 'closed'\nhint: use one of: open, none, allow"),
        (["--net", "none", "--allow", "github.com"], "",
         "agentbox: --allow cannot be combined with network mode 'none'\n"
         "hint: use --net allow --allow HOST, or drop --allow"),
        (["--allow", "https://github.com"], "",
         "agentbox: --allow: 'https://github.com' is not a host pattern\n"
         "hint: use an exact DNS name (github.com) or a leading wildcard (*.npmjs.org); no "
         "ports, schemes, paths, IP addresses or inner '*'"),
        ([], '[network]\nallow = ["a b"]\n', 'network.allow = ["a b"] has the element "a b", '
         "not a name without spaces"),
        ([], '[network]\nallow = ["github.com/x"]\n', 'has the element "github.com/x", not a '
         "host name or *. suffix"),
        ([], '[network]\nresolve = ["web.test"]\n', 'has the element "web.test", not '
         "NAME:ADDRESS"),
        (["--secret", "NOPE@api.example.com"], "",
         "agentbox: --secret NOPE: the environment variable NOPE is not set\n"
         "hint: export NOPE in the shell that runs agentbox (its value never enters the "
         "sandbox)"),
        (["--secret", "HTTPS_PROXY@api.example.com"], "",
         "agentbox: --secret HTTPS_PROXY: agentbox sets HTTPS_PROXY itself inside the sandbox"),
        (["--net", "none", "--secret", "TOKEN@api.example.com"], "",
         "agentbox: a secret (TOKEN) needs the egress proxy, and the network mode is 'none'\n"
         "hint: use --net allow (a secret's hosts are allowed with it), or drop the secret"),
        (["--secret-file", "TOKEN@api.example.com"], "",
         "agentbox: --secret-file 'TOKEN@api.example.com' is not NAME@HOST[,HOST...]=PATH\n"),
        (["--secret-file", "TOKEN@api.example.com=/nonexistent/key"], "",
         "agentbox: --secret-file TOKEN: cannot read /nonexistent/key: No such file or "
         "directory\n"),
        ([], '[secrets]\nenv = ["TOKEN"]\n', 'secrets.env = ["TOKEN"] has the element "TOKEN", '
         "not NAME@HOST[,HOST...]"),
        ([], '[secrets]\nfiles = ["T@a.example=key"]\n', 'has the element "T@a.example=key", '
         "not NAME@HOST[,HOST...]=PATH with an absolute PATH\nhint: secrets.files must be "),
        ([], '[secrets]\nenv = ["UNSET@a.example"]\n', "agentbox: [secrets] env UNSET: the "
         "environment variable UNSET is not set"),
        (["--nix-outside-policy"], "",
         "agentbox: --nix-outside-policy goes with a network policy, and the network mode is "
         "'open'\nhint: the task has the project's Nix daemon already: drop the flag, or add "
         "--net allow or --net none\n"),
        ([], '[network]\nnix_outside_policy = "yes"\n',
         'network.nix_outside_policy = "yes" is a string, not true or false'),
    ],
    ids=["unknown-net", "allow-with-none", "url-as-host", "space", "path", "resolve",
         "unset-secret", "reserved-name", "secret-without-proxy", "file-spec", "file-missing",
         "config-spec", "config-relative-file", "config-unset", "nix-outside-without-policy",
         "nix-outside-not-a-boolean"],
)  # fmt: skip
def test_bad_network_input_is_refused_before_anything_runs(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], config: str, said: str
) -> None:
    if config:
        (home / ".config/agentbox").mkdir(parents=True)
        (home / ".config/agentbox/agentbox.toml").write_text(config)
    env = {"HOME": str(home), "PATH": "/nonexistent", "TOKEN": "t"}  # nothing could run
    code = main(["container", *argv, "--dry-run", "--", "true"], env)
    err = capsys.readouterr().err
    assert code != 0
    assert said in err, err


@pytest.mark.parametrize(
    ("argv", "config", "daemon"),
    [
        (["--net", "none"], "", False),
        (["--net", "allow", "--allow", "github.com"], "", False),
        (["--net", "none", "--nix-outside-policy"], "", True),
        ([], '[network]\nmode = "none"\nnix_outside_policy = true\n', True),
        ([], '[network]\nmode = "none"\nnix_outside_policy = false\n', False),
    ],
    ids=["none", "allow", "flag", "config", "config-false"],
)  # fmt: skip
def test_under_a_policy_the_task_has_the_nix_daemon_only_when_asked(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], config: str, daemon: bool
) -> None:
    """The whole command line: --dry-run prints the plan and runs nothing (its podman would
    leave a mark)."""
    if config:
        (home / ".config/agentbox").mkdir(parents=True)
        (home / ".config/agentbox/agentbox.toml").write_text(config)
    bin_dir = home / "bin"
    bin_dir.mkdir()
    (bin_dir / "podman").write_text(f"#!/bin/sh\ntouch {home}/ran\nexit 1\n")
    (bin_dir / "podman").chmod(0o755)
    env = {"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    assert main(["--image", "localhost/agentbox:1", "container", *argv, "--dry-run", "--",
                 "true"], env) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert not (home / "ran").exists()
    task = out.splitlines()[-1].split()
    assert ("--env=NIX_REMOTE=unix:///nix/var/nix/daemon-socket/socket" in
            [f"{a}={b}" for a, b in itertools.pairwise(task)]) is daemon  # fmt: skip
    assert ("AGENTBOX_NIX_DAEMON_OFF=1" in task) is not daemon
    assert ("/nix/var/nix/daemon-socket:ro,mode=755,notmpcopyup" in task) is not daemon
    said = "as --nix-outside-policy asked" if daemon else "(no Nix daemon: /nix read-only"
    assert said in out, out


@pytest.mark.parametrize("mode", [["microvm"], []])
def test_a_vm_mode_refuses_a_network_policy_it_cannot_enforce(
    home: Path, capsys: pytest.CaptureFixture[str], mode: list[str]
) -> None:
    (home / ".config/agentbox").mkdir(parents=True)
    (home / ".config/agentbox/agentbox.toml").write_text('[network]\nmode = "none"\n')
    env = {"HOME": str(home), "PATH": "/nonexistent"}
    assert main([*mode, "--dry-run", "--", "true"], env) == 1
    verb = mode[0] if mode else "libkrun"
    assert capsys.readouterr().err == (
        f"agentbox: agentbox {verb} cannot enforce [network] mode = 'none': its VM has the "
        "host's network\n"
        f'hint: run `agentbox container` (it enforces it), or set [network] mode = "open" to '
        f"use {verb} with the host's network\n"
    )


@pytest.mark.parametrize("mode", [["microvm"], []])
def test_a_vm_mode_refuses_configured_secrets_it_cannot_carry(
    home: Path, capsys: pytest.CaptureFixture[str], mode: list[str]
) -> None:
    (home / ".config/agentbox").mkdir(parents=True)
    (home / ".config/agentbox/agentbox.toml").write_text(
        '[secrets]\nenv = ["TOKEN@api.example.com"]\n'
    )
    env = {"HOME": str(home), "PATH": "/nonexistent", "TOKEN": "t"}
    assert main([*mode, "--dry-run", "--", "true"], env) == 1
    verb = mode[0] if mode else "libkrun"
    assert capsys.readouterr().err == (
        f"agentbox: agentbox {verb} cannot carry the secrets of [secrets] (TOKEN first): its VM "
        "has the host's network and no proxy to put them in requests\n"
        f"hint: run `agentbox container` (it does), or move [secrets] out of the config file to "
        f"use {verb}\n"
    )


@pytest.mark.parametrize(
    ("argv", "config", "said"),
    [
        (["--agent", "codex", "kube"], "", "'kube' takes no --agent"),
        (["kube", "--net", "none"], "", "agentbox kube cannot carry a network policy"),
        (["kube"], '[network]\nallow = ["github.com"]\n', "agentbox kube cannot carry a network"),
        (["kube"], '[secrets]\nfiles = ["T@a.example=/etc/hostname"]\n',
         "agentbox kube cannot carry [secrets]"),
    ],
)  # fmt: skip
def test_kube_refuses_what_a_cluster_would_not_obey(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], config: str, said: str
) -> None:
    if config:
        (home / ".config/agentbox").mkdir(parents=True)
        (home / ".config/agentbox/agentbox.toml").write_text(config)
    assert main(argv, {"HOME": str(home), "PATH": "/nonexistent"}) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith(f"agentbox: {said}"), out.err
