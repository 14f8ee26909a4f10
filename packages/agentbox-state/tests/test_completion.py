"""Shell completion scripts: the grammar read from the parser's tables, and the generated text.

The scripts themselves run in real bash, fish and zsh in tests/integration/test_completion.py;
here the tables are checked (what each scope offers), the tables' text in the scripts is
compared whole for a small command line, and the ``completion`` verb is run through
``app.main``.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from agentbox_state.cli import app
from agentbox_state.cli.args import Option
from agentbox_state.cli.completion import (
    GENERATORS,
    HELP,
    VERSION,
    fq,
    grammar,
    script,
    sq,
    value_kind,
)
from agentbox_state.cli.verbs import COMPLETION, CONFIG, JSON, PATHS, SHELLS
from agentbox_state.config import STATE_TABLE

GLOBAL = (Option("--image", "image", metavar="REF"), Option("--debug", "debug"))
STORE = Option("--store", "where", metavar="KIND", choices=("disk", "ram"))
RUN = app.Verb(
    "run", "run it", lambda ctx: 0,
    (STORE, Option("--conf", "a file", metavar="PATH"), Option("--port", "p", short="-p",
                                                                metavar="N")),
    runs_command=True,
)  # fmt: skip
STOP = app.Verb("stop", "stop a task", lambda ctx: 0, operand="TASK")
HIDDEN = app.Verb("internal", "not for you", lambda ctx: 0, actions=("x",), operand="CONF",
                  hidden=True)  # fmt: skip
MAKE = app.Verb("make", "make one", lambda ctx: 0, (JSON,), actions=("image", "disk"))
VERBS = (RUN, STOP, MAKE, HIDDEN)


def spec(*, mode_key: str | None = None) -> app.AppSpec:
    return app.AppSpec(
        name="tool", version="1", description="test tool", image_env="TOOL_IMAGE",
        default_image="x", schema={"state": STATE_TABLE}, default_verb="run", mode_key=mode_key,
    )  # fmt: skip


def test_grammar_scopes_leave_hidden_verbs_out() -> None:
    g = grammar(spec(), VERBS, GLOBAL)
    assert g.prog == "tool"
    assert g.verbs == (("run", "run it"), ("stop", "stop a task"), ("make", "make one"))
    assert dict(g.options) == {
        "": (*GLOBAL, *RUN.options, HELP, VERSION),  # loftd-like: a fixed default verb
        "run": (*GLOBAL, *RUN.options, HELP),
        "stop": (*GLOBAL, HELP),
        "make": (*GLOBAL, JSON, HELP),
    }
    assert g.actions == (("make", ("image", "disk")),)
    assert g.operands == (("stop", "TASK"),)


def test_a_configurable_default_verb_lends_no_options_before_the_verb() -> None:
    # agentbox's bare verb comes from [run] mode: which options apply before a verb is not fixed
    g = grammar(spec(mode_key="run.mode"), VERBS, GLOBAL)
    assert dict(g.options)[""] == (*GLOBAL, HELP, VERSION)


@pytest.mark.parametrize(
    ("option", "kind"),
    [
        (STORE, ("words", "disk", "ram")),
        (Option("--conf", "c", metavar="PATH"), ("files",)),
        (Option("--base", "b", metavar="TAR"), ("files",)),
        (Option("--image", "i", metavar="REF"), ("text",)),
    ],
    ids=["choices", "path", "tar", "free-text"],
)
def test_value_kind(option: Option, kind: tuple[str, ...]) -> None:
    assert value_kind(option) == kind


def test_quoting() -> None:
    assert sq("the image's") == "'the image'\\''s'"
    assert fq("the image's \\ x") == "'the image\\'s \\\\ x'"


def test_bash_tables_whole() -> None:
    text = script("bash", spec(mode_key="run.mode"), VERBS, GLOBAL)
    start = text.index("_tool_value()")
    tables = text[start : text.index("_tool() {")]
    assert tables.splitlines() == [
        "_tool_value() {  # VERB OPTION: how its value completes (words W..., files, text)",
        '    case "$1 $2" in',
        "    ' --image') echo text ;;",
        "    'run --image') echo text ;;",
        "    'run --store') echo words disk ram ;;",
        "    'run --conf') echo files ;;",
        "    'run --port'|'run -p') echo text ;;",
        "    'stop --image') echo text ;;",
        "    'make --image') echo text ;;",
        "    *) return 1 ;;",
        "    esac",
        "}",
        "",
        '_tool_options() {  # VERB ("" before it): the options accepted there',
        "    case $1 in",
        "    '') printf '%s\\n' '--image' '--debug' '--help' '-h' '--version' ;;",
        "    'run') printf '%s\\n' '--image' '--debug' '--store' '--conf' '--port' '-p' '--help'"
        " '-h' ;;",
        "    'stop') printf '%s\\n' '--image' '--debug' '--help' '-h' ;;",
        "    'make') printf '%s\\n' '--image' '--debug' '--json' '--help' '-h' ;;",
        "    *) return 1 ;;",
        "    esac",
        "}",
        "",
        "_tool_actions() {  # VERB: its actions",
        "    case $1 in",
        "    'make') echo image disk ;;",
        "    *) : ;;",
        "    esac",
        "}",
        "",
        "_tool_operand() {  # VERB: the metavar of its operands",
        "    case $1 in",
        "    'stop') echo TASK ;;",
        "    *) : ;;",
        "    esac",
        "}",
        "",
    ]
    assert "compgen -W 'run stop make' -- \"$cur\"" in text
    assert 'compgen -W "$(command tool ps --quiet 2>/dev/null)"' in text
    assert text.endswith("\ncomplete -F _tool tool")
    assert "internal" not in text


def test_fish_and_zsh_name_the_same_words() -> None:
    fish = script("fish", spec(), VERBS, GLOBAL)
    assert "        case 'run --store'\n            printf '%s\\n' words disk ram\n" in fish
    assert "        case ' --store'\n            printf '%s\\n' words disk ram\n" in fish
    assert "printf '%s\\t%s\\n' 'run' 'run it' 'stop' 'stop a task' 'make' 'make one'" in fish
    assert "command tool ps --quiet 2>/dev/null" in fish
    assert fish.endswith("complete --command tool --no-files --arguments '(__tool_complete)'")
    zsh = script("zsh", spec(), VERBS, GLOBAL)
    assert zsh.startswith("#compdef tool\n")
    assert "    'run --store') echo words disk ram ;;" in zsh
    assert "'--store:where' '--conf:a file' '--port:p' '-p:p'" in zsh
    assert "printf '%s\\n' 'run:run it' 'stop:stop a task' 'make:make one'" in zsh
    assert "internal" not in fish + zsh


def test_every_shell_the_verb_offers_has_a_generator() -> None:
    assert tuple(GENERATORS) == SHELLS == COMPLETION.actions


def test_the_completion_verb_prints_the_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out: list[str] = []
    err: list[str] = []
    verbs = (PATHS, CONFIG, COMPLETION)
    code = app.main(spec(), verbs, ["completion", "bash"], {"HOME": str(tmp_path)},
                    out=out.append, err=err.append)  # fmt: skip
    assert (code, err) == (0, [])
    from agentbox_state.cli.flags import global_options

    assert out == [script("bash", spec(), verbs, global_options("TOOL_IMAGE"))]
    assert "'paths') printf '%s\\n' '--image' " in out[0]
    code = app.main(spec(), verbs, ["completion"], {"HOME": str(tmp_path)},
                    out=out.append, err=err.append)  # fmt: skip
    assert code == 2
    assert err == ["tool: 'completion' needs an action (bash, fish, zsh)\n"
                   "hint: see 'tool completion --help'"]  # fmt: skip


def test_start_up_does_not_import_the_generators() -> None:
    code = "import sys, agentbox_state.cli.verbs; print('agentbox_state.cli.completion' in " \
        "sys.modules)"  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert done.stdout == "False\n"
