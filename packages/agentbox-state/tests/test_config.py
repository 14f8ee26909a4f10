from __future__ import annotations

from pathlib import Path

import pytest

from agentbox_state.config import (
    STATE_TABLE,
    ConfigFile,
    Key,
    load_config,
    non_negative_int,
    one_of,
    toml_repr,
    whole_number_text,
)
from agentbox_state.errors import ConfigError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agentbox_state.config import Schema

SCHEMA: Schema = {
    "state": STATE_TABLE,
    "task-rootfs": {
        "backend": Key(
            accepted='"btrfs-snapshot" or "fuse-overlay"',
            convert=one_of("btrfs-snapshot", "fuse-overlay", hints={"btrfs": "say btrfs-snapshot"}),
        )
    },
    "container": {"grace": Key(accepted="a whole number of seconds", convert=non_negative_int)},
}
LOCATION_HINT = (
    'state.location must be an absolute path such as "/srv/state" '
    "(state then lives in /srv/state/<app>)"
)


def write(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "app.toml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return str(path)


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    absent = str(tmp_path / "absent.toml")
    cfg = load_config(absent, SCHEMA)
    assert cfg == ConfigFile(path=absent, exists=False, values={})


def test_valid_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '# comment\n[state]\nlocation = "/srv/x/"\n'
        '[task-rootfs]\nbackend = "fuse-overlay"\n[container]\ngrace = 0\n',
    )
    cfg = load_config(path, SCHEMA)
    assert cfg.exists
    assert cfg.values == {
        "state.location": "/srv/x",
        "task-rootfs.backend": "fuse-overlay",
        "container.grace": 0,
    }


def test_empty_file_is_fine(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), SCHEMA).values == {}


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        pytest.param(
            "[state\n",
            "is not valid TOML: Expected ']' at the end of a table declaration "
            "(at line 1, column 7)",
            "fix the syntax there, or move the file away to use the defaults",
            id="unparseable",
        ),
        pytest.param(
            "[stat]\nlocation = '/x'\n",
            "unknown table [stat]",
            "accepted tables: [state], [task-rootfs], [container]; remove or rename it",
            id="unknown-table",
        ),
        pytest.param(
            'location = "/x"\n',
            'unknown top-level key location = "/x"',
            "accepted tables: [state], [task-rootfs], [container]; remove or rename it",
            id="top-level-key",
        ),
        pytest.param(
            'state = "x"\n',
            'state = "x" is a string, not a table',
            "write it as a table: [state] with keys location",
            id="table-not-a-table",
        ),
        pytest.param(
            "[state]\nlocaton = '/x'\n",
            'unknown key state.locaton = "/x"',
            "accepted keys in [state]: location",
            id="unknown-key",
        ),
        pytest.param(
            "[state]\nlocation = 5\n",
            "state.location = 5 is an integer, not a string",
            LOCATION_HINT,
            id="wrong-type",
        ),
        pytest.param(
            "[state]\nlocation = ['/a']\n",
            'state.location = ["/a"] is an array, not a string',
            LOCATION_HINT,
            id="wrong-type-array",
        ),
        pytest.param(
            "[state]\nlocation = 'rel/dir'\n",
            'state.location = "rel/dir" is a relative path',
            LOCATION_HINT + "; write the full path; ~ and relative paths are not expanded",
            id="relative",
        ),
        pytest.param(
            "[state]\nlocation = '~/state'\n",
            'state.location = "~/state" is a relative path',
            LOCATION_HINT + "; write the full path; ~ and relative paths are not expanded",
            id="tilde",
        ),
        pytest.param(
            "[state]\nlocation = ''\n",
            'state.location = "" is empty',
            LOCATION_HINT,
            id="empty",
        ),
        pytest.param(
            "[task-rootfs]\nbackend = 'btrfs'\n",
            'task-rootfs.backend = "btrfs" is not one of the accepted values',
            'task-rootfs.backend must be "btrfs-snapshot" or "fuse-overlay"; say btrfs-snapshot',
            id="choice-with-hint",
        ),
        pytest.param(
            "[task-rootfs]\nbackend = 'zfs'\n",
            'task-rootfs.backend = "zfs" is not one of the accepted values',
            'task-rootfs.backend must be "btrfs-snapshot" or "fuse-overlay"',
            id="choice",
        ),
        pytest.param(
            "[container]\ngrace = -1\n",
            "container.grace = -1 is negative",
            "container.grace must be a whole number of seconds",
            id="negative",
        ),
        pytest.param(
            "[container]\ngrace = true\n",
            "container.grace = true is a boolean, not a whole number",
            "container.grace must be a whole number of seconds",
            id="bool-is-not-int",
        ),
    ],
)
def test_bad_config_names_file_key_and_value(
    tmp_path: Path, text: str, message: str, hint: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, SCHEMA)
    assert caught.value.message == f"{path}: {message}"
    assert caught.value.hint == hint
    assert caught.value.exit_code == 1
    assert caught.value.path == path


def test_key_path_is_recorded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "[state]\nlocation = 1\n"), SCHEMA)
    assert caught.value.key_path == "state.location"


def test_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, b'[state]\nlocation = "/\xff"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, SCHEMA)
    assert caught.value.message == f"{path}: is not UTF-8 text (bad byte at offset 21)"
    assert caught.value.hint == "save the file as UTF-8"


def test_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "dir.toml"
    path.mkdir()
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), SCHEMA)
    assert caught.value.message == f"{path}: cannot read the config file: Is a directory"


@pytest.mark.parametrize(
    ("value", "text"),
    [('a"b\\', '"a\\"b\\\\"'), (True, "true"), (3, "3"), ({"a": 1}, "{ a = 1 }")],
)
def test_toml_repr(value: object, text: str) -> None:
    assert toml_repr(value) == text


ENV_SCHEMA: Schema = {
    "container": {
        "grace": Key(
            accepted="a whole number of seconds",
            convert=non_negative_int,
            default=120,
            env="APP_GRACE",
            from_env=whole_number_text,
        ),
        "name": Key(accepted="a string", convert=one_of("a", "b"), env="APP_NAME"),
    },
}


def test_the_environment_overrides_the_file_and_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, '[container]\ngrace = 300\nname = "a"\n')
    cfg = load_config(path, ENV_SCHEMA, {"APP_GRACE": "5", "OTHER": "x"})
    assert cfg.get("container.grace") == 5
    assert cfg.overrides == {"container.grace": (5, "APP_GRACE")}
    assert cfg.values["container.grace"] == 300  # what the file said is kept, for `config`
    assert cfg.get("container.name") == "a"
    assert load_config(path, ENV_SCHEMA, {"APP_NAME": "b"}).get("container.name") == "b"
    absent = load_config(str(tmp_path / "none.toml"), ENV_SCHEMA, {"APP_GRACE": "0"})
    assert absent.get("container.grace") == 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APP_GRACE": "soon"}, "APP_GRACE='soon' is a string, not a whole number"),
        ({"APP_GRACE": "-1"}, "APP_GRACE='-1' is a string, not a whole number"),
        ({"APP_GRACE": ""}, "APP_GRACE='' is a string, not a whole number"),
        ({"APP_NAME": "c"}, "APP_NAME='c' is not one of the accepted values"),
    ],
)  # fmt: skip
def test_a_bad_environment_value_is_refused_naming_the_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        load_config(str(tmp_path / "none.toml"), ENV_SCHEMA, env)
    assert caught.value.message == message
    assert caught.value.hint is not None
    assert caught.value.hint.endswith("or unset it")
