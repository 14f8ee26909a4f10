import pickle

from agentbox_state.errors import (
    AgentboxError,
    CommandError,
    ConfigError,
    UsageError,
    render_error,
)


def test_render_with_and_without_hint() -> None:
    assert render_error("agentbox", AgentboxError("disk is full", hint="grow it")) == (
        "agentbox: disk is full\nhint: grow it"
    )
    assert render_error("loftd", AgentboxError("no")) == "loftd: no"


def test_unexpected_errors_say_they_are_bugs() -> None:
    assert render_error("agentbox", KeyError("x")) == (
        "agentbox: internal error: KeyError: 'x'\n"
        "hint: this is a bug in agentbox; rerun with --debug for the traceback and report it"
    )


def test_exit_codes() -> None:
    assert AgentboxError("x").exit_code == 1
    assert UsageError("x").exit_code == 2
    assert AgentboxError("x", exit_code=7).exit_code == 7


def test_errors_survive_pickling() -> None:
    errors: list[AgentboxError] = [
        AgentboxError("a", hint="h", exit_code=3),
        ConfigError("bad", path="/c.toml", key_path="state.location", hint="fix"),
        CommandError("failed", argv=("x", "y"), returncode=2, stderr_tail="t"),
    ]
    for err in errors:
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err)
        assert back.__dict__ == err.__dict__
        assert str(back) == str(err)
