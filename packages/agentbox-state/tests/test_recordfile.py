from pathlib import Path

import pytest

from agentbox_state import recordfile
from agentbox_state.recordfile import RecordFileError

FIELDS = {"name": str, "count": int, "since": float}


def test_round_trip_in_order(tmp_path: Path) -> None:
    path = tmp_path / "x.state"
    recordfile.write(path, {"name": "a=b\nc", "count": 3, "since": 1.5})
    assert path.read_text() == '{"name": "a=b\\nc", "count": 3, "since": 1.5}\n'
    assert recordfile.read(path, what="test record", fields=FIELDS) == {
        "name": "a=b\nc", "count": 3, "since": 1.5,
    }  # fmt: skip
    assert not (tmp_path / "x.state.tmp").exists()


def test_missing_file_is_none_and_floats_accept_integers(tmp_path: Path) -> None:
    assert recordfile.read(tmp_path / "none", what="test record", fields=FIELDS) is None
    got = recordfile.decode(b'{"since": 2}', path="/p", what="test record", fields=FIELDS)
    assert got == {"since": 2.0}
    assert isinstance(got["since"], float)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff", "is not UTF-8 text (bad byte at offset 0)"),
        (b"name x\n", "is not JSON (Expecting value at line 1 column 1)"),
        (b"color=1\n", "has the unknown key 'color' (known: name, count, since)"),
        (b"name=a\ncount=x\n", "has 'count' as 'x', not an integer"),
        (b"count=1\n", "lacks 'name'"),
        (b'"x"', "is a string, not a JSON object"),
        (b'{"color": 1}', "has the unknown key 'color' (known: name, count, since)"),
        (b'{"count": true}', "has 'count' as a boolean, not an integer"),
        (b'{"count": 1.5}', "has 'count' as a number, not an integer"),
        (b'{"since": "now"}', "has 'since' as a string, not a number"),
        (b'{"name": null}', "has 'name' as null, not a string"),
        (b'{"count": 1}', "lacks 'name'"),
    ],
)
def test_refusals_name_the_file_and_the_key(data: bytes, reason: str) -> None:
    with pytest.raises(RecordFileError) as caught:
        recordfile.decode(data, path="/s/x.state", what="test record", fields=FIELDS,
                          required=("name",), hint="remove it")  # fmt: skip
    assert caught.value.message == f"the test record /s/x.state {reason}"
    assert caught.value.path == "/s/x.state"
    assert caught.value.hint == "remove it"


def test_the_previous_versions_key_value_lines_still_read(tmp_path: Path) -> None:
    """What agentbox wrote before its records were JSON: a sidecar or lock holder of the
    previous version is still understood after an upgrade."""
    path = tmp_path / "old.state"
    path.write_text("name=a=b\ncount=3\nsince=1.5\n")
    assert recordfile.read(path, what="test record", fields=FIELDS) == {
        "name": "a=b", "count": 3, "since": 1.5,
    }  # fmt: skip
