import pytest

from agentbox_state.errors import UsageError
from agentbox_state.parse import GIB, TIB, env_flag, format_size, parse_bool, parse_disk_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", GIB),
        ("128", 128 * GIB),
        ("128G", 128 * GIB),
        ("128g", 128 * GIB),
        ("128GiB", 128 * GIB),
        ("128GIB", 128 * GIB),
        ("128gib", 128 * GIB),
        ("2T", 2 * TIB),
        ("2t", 2 * TIB),
        ("2TiB", 2 * TIB),
        ("2TIB", 2 * TIB),
        ("2tib", 2 * TIB),
        ("064", 64 * GIB),
    ],
)
def test_disk_size_accepts(text: str, expected: int) -> None:
    assert parse_disk_size(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0", "it is zero"),
        ("0G", "it is zero"),
        ("-5", "it does not start with a whole number"),
        ("", "it does not start with a whole number"),
        ("G", "it does not start with a whole number"),
        ("1.5", "the unit '.5' is not accepted"),
        ("1.5G", "the unit '.5G' is not accepted"),
        ("512M", "the unit 'M' is not accepted"),
        ("64 G", "the unit ' G' is not accepted"),
        ("64GB", "the unit 'GB' is not accepted"),
        (" 64", "it does not start with a whole number"),
        ("99999999999T", "it is larger than a file can be"),
    ],
)
def test_disk_size_rejects_with_what_is_accepted(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_disk_size(text, what="--size")
    assert caught.value.message == f"invalid --size {text!r}: {problem}"
    assert caught.value.hint == (
        "give a positive whole number of GiB or TiB, like 128, 128G, 128GiB, 2T or 2TiB"
    )
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("size", "text"),
    [(64 * GIB, "64GiB"), (2 * TIB, "2TiB"), (1536 * 1024**2, "1536MiB"), (1000, "1000B")],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize("word", ["1", "true", "yes", "on", "TRUE", "Yes", "On"])
def test_bool_true(word: str) -> None:
    assert parse_bool(word, name="X") is True


@pytest.mark.parametrize("word", ["0", "false", "no", "off", "FALSE", "No"])
def test_bool_false(word: str) -> None:
    assert parse_bool(word, name="X") is False


@pytest.mark.parametrize("word", ["", "2", "y", "enable", " true", "true "])
def test_bool_rejects(word: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_bool(word, name="AGENTBOX_THING")
    assert caught.value.message == f"invalid value {word!r} for AGENTBOX_THING"
    assert caught.value.hint == (
        "set AGENTBOX_THING to 1, true, yes or on to enable; 0, false, no or off to disable, "
        "or unset it"
    )


def test_env_flag_default_and_value() -> None:
    assert env_flag({}, "X") is False
    assert env_flag({}, "X", default=True) is True
    assert env_flag({"X": "yes"}, "X") is True
    with pytest.raises(UsageError):
        env_flag({"X": "maybe"}, "X", default=True)
