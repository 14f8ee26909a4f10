"""``[run] mode`` / ``AGENTBOX_MODE``: what bare ``agentbox`` runs, shown by ``config`` with its
source; a config that cannot be read is an error, never a silent libkrun run."""

import json
from pathlib import Path

import pytest

from agentbox_cli.main import VERBS
from agentbox_cli.schema import SPEC
from agentbox_state.cli.app import Context, Verb, default_verb, main


def chosen(tmp_path: Path, argv: list[str], config: str | None = None,
           **env: str) -> tuple[int, list[str], list[str]]:  # fmt: skip
    """Run the real parser and dispatch with each mode verb replaced by one that says its name
    (and the options it got), so nothing is started."""
    ran: list[str] = []

    def say(ctx: Context) -> int:
        ran.append(f"{ctx.args.verb} {sorted(ctx.args.values)}")
        return 0

    verbs = [Verb(v.name, v.help, say, v.options, v.actions, v.action_required, v.runs_command)
             if v.name in ("libkrun", "container", "microvm") else v for v in VERBS]  # fmt: skip
    if config is not None:
        (tmp_path / "agentbox").mkdir(exist_ok=True)
        (tmp_path / "agentbox" / "agentbox.toml").write_text(config)
    environ = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), **env}
    out: list[str] = []
    err: list[str] = []
    code = main(SPEC, verbs, argv, environ, out=out.append, err=err.append)
    return code, ran, out + err


def test_bare_agentbox_runs_libkrun_by_default(tmp_path: Path) -> None:
    assert chosen(tmp_path, []) == (0, ["libkrun []"], [])


def test_the_config_file_chooses_and_the_environment_overrides_it(tmp_path: Path) -> None:
    toml = '[run]\nmode = "container"\n'
    assert chosen(tmp_path, [], toml) == (0, ["container []"], [])
    assert chosen(tmp_path, [], toml, AGENTBOX_MODE="microvm") == (0, ["microvm []"], [])
    # the chosen mode's own options are accepted without naming it
    assert chosen(tmp_path, ["--storage", "fuse-overlay"], toml, AGENTBOX_MODE="microvm") == (
        0, ["microvm ['storage']"], [])  # fmt: skip
    # a verb on the command line is what runs, whatever the config says
    assert chosen(tmp_path, ["libkrun"], toml) == (0, ["libkrun []"], [])


def test_a_bad_mode_is_refused_naming_where_it_came_from(tmp_path: Path) -> None:
    code, ran, said = chosen(tmp_path, [], '[run]\nmode = "vm"\n')
    assert (code, ran) == (1, [])
    assert said == [
        f'agentbox: {tmp_path}/agentbox/agentbox.toml: run.mode = "vm" is not one of the '
        'accepted values\nhint: run.mode must be "libkrun", "container" or "microvm" (what bare '
        "`agentbox` runs)"
    ]
    code, ran, said = chosen(tmp_path, [], None, AGENTBOX_MODE="docker")
    assert (code, ran) == (2, [])
    assert said == [
        "agentbox: AGENTBOX_MODE='docker' is not one of the accepted values\n"
        'hint: it must be "libkrun", "container" or "microvm" (what bare `agentbox` runs), like '
        "[run].mode; or unset it"
    ]
    # --help still answers with a broken config
    assert chosen(tmp_path, ["--help"], None, AGENTBOX_MODE="docker")[0] == 0


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        (None, {}, ("libkrun", "default")),
        ('[run]\nmode = "container"\n', {}, ("container", "agentbox.toml [run].mode")),
        ('[run]\nmode = "container"\n', {"AGENTBOX_MODE": "microvm"},
         ("microvm", "env AGENTBOX_MODE")),
    ],
    ids=["default", "file", "env"],
)  # fmt: skip
def test_config_shows_the_mode_and_its_source(
    tmp_path: Path, toml: str | None, env: dict[str, str], expected: tuple[str, str]
) -> None:
    code, _, said = chosen(tmp_path, ["config", "--json"], toml, **env)
    assert code == 0
    setting = json.loads(said[0])["settings"]["run.mode"]
    value, source = expected
    assert setting["value"] == value
    assert setting["source"].endswith(source)


def test_default_verb_reads_the_mode_key(tmp_path: Path) -> None:
    environ = {"HOME": str(tmp_path), "AGENTBOX_MODE": "container"}
    verb, config = default_verb(SPEC, environ)
    assert verb == "container"
    assert config is not None
    assert config.overrides == {"run.mode": ("container", "AGENTBOX_MODE")}
    assert default_verb(SPEC, {"HOME": str(tmp_path), "AGENTBOX_MODE": "x"}) == ("libkrun", None)
