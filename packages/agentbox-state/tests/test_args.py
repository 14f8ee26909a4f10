"""The hand-written command-line parser: its grammar and its refusals."""

import pytest

from agentbox_state.cli.args import Args, Option, parse, render_help
from agentbox_state.errors import UsageError

GLOBAL = (
    Option("--image", "image", metavar="REF"),
    Option("--debug", "debug"),
)
VERBS = {
    "paths": (Option("--json", "json"),),
    "run": (Option("--publish", "publish a port", metavar="SPEC", short="-p", repeat=True),),
}


def p(*argv: str) -> Args:
    return parse("tool", argv, GLOBAL, VERBS)


@pytest.mark.parametrize(
    ("argv", "verb", "values", "command"),
    [
        ((), None, {}, ()),
        (("paths",), "paths", {}, ()),
        (("--debug", "paths", "--json"), "paths", {"debug": True, "json": True}, ()),
        (("paths", "--json", "--debug"), "paths", {"debug": True, "json": True}, ()),
        (("--image", "a/b:1", "paths"), "paths", {"image": "a/b:1"}, ()),
        (("paths", "--image=a/b:1"), "paths", {"image": "a/b:1"}, ()),
        (("--image=",), None, {"image": ""}, ()),
        (("--image", "--debug"), None, {"image": "--debug"}, ()),  # a value is taken as given
        (("run", "-p", "80:80", "--publish=udp:53:53"), "run",
         {"publish": ("80:80", "udp:53:53")}, ()),
        (("run", "--", "ls", "-la", "--"), "run", {}, ("ls", "-la", "--")),
        (("--", "ls"), None, {}, ("ls",)),
        (("--debug", "--debug"), None, {"debug": True}, ()),
    ],
)  # fmt: skip
def test_grammar(
    argv: tuple[str, ...], verb: str | None, values: dict[str, object], command: tuple[str, ...]
) -> None:
    assert p(*argv) == Args(verb=verb, values=values, command=command)


@pytest.mark.parametrize(
    ("argv", "message", "hint"),
    [
        (("nope",), "unknown verb 'nope' (choose from: paths, run)", "see 'tool --help'"),
        (("paths", "run"), "unexpected argument 'run' after 'paths'", "see 'tool --help'"),
        (("--json",), "unknown option --json before the verb",
         "--json belongs after the verb: tool paths --json"),
        (("run", "--json"), "unknown option --json for 'run'",
         "--json belongs after the verb: tool paths --json"),
        (("--bogus",), "unknown option --bogus before the verb", "see 'tool --help'"),
        (("-x",), "unknown option -x before the verb", "see 'tool --help'"),
        (("--debug=1",), "--debug takes no value (got '--debug=1')", "see 'tool --help'"),
        (("--image",), "--image needs a value (REF)", "see 'tool --help'"),
        (("--image", "a", "--image", "b"), "--image is given twice", "give it once"),
    ],
)  # fmt: skip
def test_refusals(argv: tuple[str, ...], message: str, hint: str) -> None:
    with pytest.raises(UsageError) as caught:
        p(*argv)
    assert (caught.value.message, caught.value.hint) == (message, hint)
    assert caught.value.exit_code == 2


def test_help_and_version_are_noted_not_acted_on() -> None:
    assert p("paths", "-h").help
    assert p("--help", "paths").verb == "paths"
    assert p("--version").version
    with pytest.raises(UsageError):
        p("paths", "--version")  # --version belongs to the program, not a verb


def test_render_help() -> None:
    table = {"paths": ("show paths", VERBS["paths"]), "run": ("run it", VERBS["run"])}
    assert render_help("tool", "A tool.", GLOBAL, table) == "\n".join(
        [
            "usage: tool [OPTIONS] [VERB] [VERB OPTIONS]",
            "",
            "A tool.",
            "",
            "verbs:",
            "  paths  show paths",
            "  run    run it",
            "",
            "options (before or after the verb):",
            "  --image REF  image",
            "  --debug      debug",
            "  -h, --help   show this help and exit",
            "  --version    print the version and exit",
        ]
    )
    assert render_help("tool", "A tool.", GLOBAL, table, "run") == "\n".join(
        [
            "usage: tool run [-p, --publish SPEC] [OPTIONS]",
            "",
            "run it",
            "",
            "run options:",
            "  -p, --publish SPEC  publish a port",
            "",
            "options (before or after the verb):",
            "  --image REF  image",
            "  --debug      debug",
            "  -h, --help   show this help and exit",
        ]
    )


ACTIONS = {"run": ("build", "list")}


def test_actions() -> None:
    args = parse("tool", ["run", "build", "-p", "1"], GLOBAL, VERBS, ACTIONS)
    assert (args.verb, args.action, args.values) == ("run", "build", {"publish": ("1",)})
    assert parse("tool", ["run", "--help"], GLOBAL, VERBS, ACTIONS).help
    with pytest.raises(UsageError) as caught:
        parse("tool", ["run"], GLOBAL, VERBS, ACTIONS)
    assert caught.value.message == "'run' needs an action (build, list)"
    with pytest.raises(UsageError) as caught:
        parse("tool", ["run", "explode"], GLOBAL, VERBS, ACTIONS)
    assert caught.value.message == "unknown action 'explode' for 'run' (choose from: build, list)"
    with pytest.raises(UsageError, match="unexpected argument 'list' after 'run'"):
        parse("tool", ["run", "build", "list"], GLOBAL, VERBS, ACTIONS)


def test_default_verbs_options_come_before_any_verb() -> None:
    args = parse("tool", ["-p", "80:80", "--", "id"], GLOBAL, VERBS, None, (), default_verb="run")
    assert (args.verb, args.values, args.command) == (None, {"publish": ("80:80",)}, ("id",))
    with pytest.raises(UsageError, match="unknown option --json before the verb"):
        parse("tool", ["--json"], GLOBAL, VERBS, None, (), default_verb="run")


def test_operands_after_an_action_with_or_without_the_separator() -> None:
    def operands(*argv: str) -> tuple[str, ...]:
        args = parse("tool", argv, GLOBAL, VERBS, ACTIONS, operand_verbs=["run"])
        assert (args.verb, args.action) == ("run", "build")
        return args.command

    assert operands("run", "build", "/t/launch.conf") == ("/t/launch.conf",)
    assert operands("run", "build", "--", "/t/launch.conf") == ("/t/launch.conf",)
    assert operands("run", "build", "a", "--", "-b") == ("a", "-b")  # after --, even dashes
    # a verb that takes no action has its operands right after it (`stop TASK`)
    stop = parse("tool", ["paths", "t1", "--json"], GLOBAL, VERBS, ACTIONS,
                 operand_verbs=["paths"])  # fmt: skip
    assert (stop.verb, stop.action, stop.command, stop.values) == ("paths", None, ("t1",),
                                                                   {"json": True})  # fmt: skip
    table = {"paths": ("stop one", VERBS["paths"])}
    assert render_help("tool", "A tool.", GLOBAL, table, "paths", "TASK").splitlines()[0] == \
        "usage: tool paths [--json] [OPTIONS] TASK"  # fmt: skip
    # without operand_verbs, a word after the action is still refused
    with pytest.raises(UsageError, match="unexpected argument 'x' after 'run'"):
        parse("tool", ["run", "build", "x"], GLOBAL, VERBS, ACTIONS)
