"""The shared command-line scaffolding, driven through ``app.main`` with captured sinks."""

import json
from pathlib import Path

import pytest

from agentbox_state.cli import app
from agentbox_state.cli.verbs import CONFIG, PATHS
from agentbox_state.config import STATE_TABLE
from agentbox_state.workspace import Workspace

SPEC = app.AppSpec(
    name="tool",
    version="9.9.9",
    description="test tool",
    image_env="TOOL_IMAGE",
    default_image="localhost/tool:latest",
    schema={"state": STATE_TABLE},
)


class Run:
    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.environ = {"HOME": str(self.home)}
        self.out: list[str] = []
        self.err: list[str] = []

    def __call__(self, *argv: str, **extra_env: str) -> int:
        self.out.clear()
        self.err.clear()
        return app.main(
            SPEC,
            (PATHS, CONFIG),
            list(argv),
            {**self.environ, **extra_env},
            out=self.out.append,
            err=self.err.append,
        )

    @property
    def stdout(self) -> str:
        return "\n".join(self.out)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    project = tmp_path / "proj"
    project.mkdir()
    monkeypatch.chdir(project)
    return Run(tmp_path)


def test_paths_json(run: Run, tmp_path: Path) -> None:
    assert run("paths", "--json") == 0
    base = run.home / ".local/state/tool"
    ws = Workspace.from_path(tmp_path / "proj")
    assert json.loads(run.stdout) == {
        "state_base": str(base),
        "state_base_source": "$HOME/.local/state",
        "config_file": str(run.home / ".config/tool/tool.toml"),
        "workspace": str(tmp_path / "proj"),
        "workspace_slug": "proj",
        "workspace_state_dir": str(base / "workspaces" / ws.key),
        "sccache_dir": str(base / "sccache"),
        "image_cache_dir": str(base / "images"),
    }
    assert run.err == []
    assert not (run.home / ".local").exists(), "paths must not create anything"


def test_global_flags_before_or_after_the_verb(run: Run) -> None:
    assert run("--root", "config", "--json") == 0
    before = json.loads(run.stdout)["settings"]
    assert run("config", "--root", "--json") == 0
    after = json.loads(run.stdout)["settings"]
    assert before == after
    assert before["root"] == {"value": True, "source": "flag --root"}
    assert before["debug"] == {"value": False, "source": "default"}


def test_config_sources(run: Run) -> None:
    cfg = run.home / ".config/tool/tool.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[state]\nlocation = "/srv/st"\n')
    assert run("config", "--json", TOOL_IMAGE="example/img:1") == 0
    report = json.loads(run.stdout)
    assert report["config_file"] == str(cfg)
    assert report["config_file_exists"] is True
    assert report["settings"] == {
        "state.location": {"value": "/srv/st", "source": f"{cfg} [state].location"},
        "state.base": {"value": "/srv/st/tool", "source": f"{cfg} [state].location"},
        "image": {"value": "example/img:1", "source": "env TOOL_IMAGE"},
        "pull_latest": {"value": False, "source": "default"},
        "debug": {"value": False, "source": "default"},
        "profile": {"value": False, "source": "default"},
        "root": {"value": False, "source": "default"},
        "dry_run": {"value": False, "source": "default"},
        "allow_home": {"value": False, "source": "default"},
    }


def test_config_text(run: Run) -> None:
    assert run("config", "--image", "x/y") == 0
    lines = run.out[0].splitlines()
    assert lines[0] == f"config_file:        {run.home}/.config/tool/tool.toml"
    assert lines[1] == "config_file_exists: no"
    assert lines[2] == "settings:"
    assert "  image:          x/y  [flag --image]" in lines
    assert "  state.location: (not set)  [default]" in lines


def test_bad_config_exits_1_with_file_key_value(run: Run) -> None:
    cfg = run.home / ".config/tool/tool.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("[state]\nlocation = 'relative'\n")
    assert run("paths") == 1
    assert run.err[0].splitlines() == [
        f'tool: {cfg}: state.location = "relative" is a relative path',
        'hint: state.location must be an absolute path such as "/srv/state" (state then lives '
        "in /srv/state/<app>); write the full path; ~ and relative paths are not expanded",
    ]
    assert run.out == []


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--image", "a", "--pull-latest", "paths"], {},
         "tool: --pull-latest cannot be combined with an explicit image (flag --image)"),
        (["paths", "--pull-latest"], {"TOOL_IMAGE": "a"},
         "tool: --pull-latest cannot be combined with an explicit image (env TOOL_IMAGE)"),
        (["paths"], {"TOOL_IMAGE": ""}, "tool: TOOL_IMAGE is set but empty"),
        (["--image", "", "paths"], {}, "tool: --image is empty"),
        (["nope"], {}, "tool: unknown verb 'nope' (choose from: paths, config)"),
        (["paths", "--bogus"], {}, "tool: unknown option --bogus for 'paths'"),
        (["paths", "--", "ls"], {}, "tool: 'paths' runs no command; remove the words after --"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(run: Run, argv: list[str], env: dict[str, str], message: str) -> None:
    assert run(*argv, **env) == 2
    assert run.err[0].splitlines()[0] == message
    assert run.err[0].splitlines()[1].startswith("hint: ")


def test_version_and_help(run: Run) -> None:
    assert run("--version") == 0
    assert run.out == ["tool 9.9.9"]
    assert run() == 0
    top = run.stdout
    assert top.startswith("usage: tool [OPTIONS] [VERB] [VERB OPTIONS]\n\ntest tool\n")
    assert run("--help") == 0
    assert run.stdout == top
    assert run("paths", "--help") == 0
    assert run.stdout.startswith("usage: tool paths [--json] [OPTIONS]\n")
    assert run("--help", "config") == 0
    assert run.stdout.startswith("usage: tool config [--json] [OPTIONS]\n")


def test_traceback_only_with_debug(run: Run) -> None:
    assert run("paths", XDG_STATE_HOME="rel") == 1
    assert "Traceback" not in run.stderr
    assert run("--debug", "paths", XDG_STATE_HOME="rel") == 1
    assert run.stderr.startswith("Traceback (most recent call last):")
    assert run.stderr.endswith(
        "tool: XDG_STATE_HOME='rel' is a relative path\n"
        "hint: set XDG_STATE_HOME to an absolute path, or unset it to use $HOME/.local/state"
    )


def test_profile_report_needs_debug(run: Run) -> None:
    assert run("paths", "--profile") == 0
    assert run.err == []
    assert run("paths", "--profile", "--debug") == 0
    report = run.err[-1].splitlines()
    assert report[0] == "tool host profile"
    assert [line.split(":")[0] for line in report[1:]] == [
        "  config_load",
        "  paths",
        "    workspace_identity",
        "  total",
    ]


def test_deleted_working_directory(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert run("paths") == 1
    assert run.err[0] == (
        "tool: the current directory no longer exists\n"
        "hint: cd into your project directory and run the command again"
    )


def _run_true(ctx: app.Context) -> int:
    return ctx.runner().run(["sh", "-c", "exit 0"], env={"X": "a b"}).returncode


def test_debug_echoes_each_command_through_the_runner(tmp_path: Path) -> None:
    verbs = (app.Verb("go", "run a command", _run_true),)
    out: list[str] = []
    err: list[str] = []
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    assert app.main(SPEC, verbs, ["go"], env, out=out.append, err=err.append) == 0
    assert err == []
    assert app.main(SPEC, verbs, ["--debug", "go"], env, out=out.append, err=err.append) == 0
    assert err == ["+ X='a b' sh -c 'exit 0'"]


def test_broken_pipe_is_silent_141(tmp_path: Path) -> None:
    def closed(text: str) -> None:
        raise BrokenPipeError

    err: list[str] = []
    code = app.main(SPEC, (PATHS,), ["--help"], {"HOME": str(tmp_path)}, out=closed,
                    err=err.append)  # fmt: skip
    assert (code, err) == (141, [])


def test_agent_is_a_global_option_only_where_the_app_has_agents(run: Run) -> None:
    seen: list[str | None] = []

    def takes(ctx: app.Context) -> int:
        seen.append(ctx.flags.agent)
        return 0

    verbs = (app.Verb("work", "takes --agent", takes, agent=True), PATHS)
    with_agents = app.AppSpec(name="tool", version="1", description="d", image_env="TOOL_IMAGE",
                              default_image="i", schema={"state": STATE_TABLE},
                              agents=True)  # fmt: skip
    out: list[str] = []
    err: list[str] = []
    assert app.main(with_agents, verbs, ["--agent", "a1", "work"], run.environ, out=out.append,
                    err=err.append) == 0  # fmt: skip
    assert app.main(with_agents, verbs, ["work", "--agent=a2"], run.environ, out=out.append,
                    err=err.append) == 0  # fmt: skip
    assert seen == ["a1", "a2"]
    assert app.main(with_agents, verbs, ["--agent", "a1", "paths"], run.environ, out=out.append,
                    err=err.append) == 2  # fmt: skip
    assert err[-1] == "tool: 'paths' takes no --agent\nhint: --agent goes with work; drop it here"
    assert "--agent NAME" in app.help_text(with_agents, verbs)
    # an app without agents (loftd) has no --agent at all
    assert run("--agent", "a1", "paths") == 2
    assert "unknown option --agent before the verb" in run.stderr
    assert "--agent" not in app.help_text(SPEC, (PATHS,))
