"""Small state records kept in files (a lock's holder, the Nix sidecar's state): one JSON object.

Written whole (``write`` replaces the file atomically; ``encode`` is for a writer that owns a
descriptor, like a lock holder). The ``key=value`` lines of the previous version are still
read (same keys and types), so an upgrade finds its running sidecar and lock holders. Read
strictly: the object may hold only the keys it declares, each of its declared type, and the
required ones must be there; anything else is a ``RecordFileError`` naming the file and the key.
"""

from __future__ import annotations

import json
import os

from agentbox_state.errors import AgentboxError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping
    from pathlib import Path

    Value = str | int | float

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number"}


class RecordFileError(AgentboxError):
    """A record file that is not what its writer writes."""

    def __init__(self, message: str, *, path: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


def encode(fields: Mapping[str, Value]) -> bytes:
    """One JSON object on one line, keys in the given order."""
    return (json.dumps(dict(fields)) + "\n").encode("utf-8")


def json_type(value: object, *, integer: str = "an integer", array: str = "an array") -> str:
    """What a decoded JSON ``value`` is, for a message (``integer`` and ``array`` let a
    document's own words name those two)."""
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    kinds = {dict: "an object", list: array, str: "a string", int: integer, float: "a number"}
    return kinds.get(type(value), type(value).__name__)


def _fits(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def decode(
    data: bytes,
    *,
    path: str | os.PathLike[str],
    what: str,
    fields: Mapping[str, type],
    required: Collection[str] = (),
    hint: str | None = None,
) -> dict[str, Value]:
    """The record in ``data``: a JSON object whose keys are among ``fields`` (name → ``str``,
    ``int`` or ``float``), with every ``required`` one. ``what`` names it in messages."""
    where = f"the {what} {os.fspath(path)}"

    def bad(reason: str) -> RecordFileError:
        return RecordFileError(f"{where} {reason}", path=os.fspath(path), hint=hint)

    if not data.lstrip().startswith(b"{") and b"=" in data:
        return _decode_lines(data, fields=fields, bad=bad, required=required)
    try:
        found = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise bad(f"is not UTF-8 text (bad byte at offset {err.start})") from None
    except json.JSONDecodeError as err:
        raise bad(f"is not JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(found, dict):
        raise bad(f"is {json_type(found)}, not a JSON object")
    for key, value in found.items():
        if key not in fields:
            raise bad(f"has the unknown key {key!r} (known: {', '.join(fields)})")
        kind = fields[key]
        if not _fits(value, kind):
            raise bad(f"has {key!r} as {json_type(value)}, not {_TYPE_NAMES[kind]}")
    missing = [key for key in required if key not in found]
    if missing:
        raise bad(f"lacks {', '.join(repr(k) for k in missing)}")
    return {key: float(v) if fields[key] is float else v for key, v in found.items()}


def _decode_lines(data: bytes, *, fields: Mapping[str, type], required: Collection[str],
                  bad: Callable[[str], RecordFileError]) -> dict[str, Value]:  # fmt: skip
    """The ``key=value`` lines agentbox wrote before its records were JSON (so a sidecar or a
    lock of the previous version still reads after an upgrade); the same keys and types."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise bad(f"is not UTF-8 text (bad byte at offset {err.start})") from None
    found: dict[str, Value] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key not in fields:
            raise bad(f"has the unknown key {key!r} (known: {', '.join(fields)})")
        kind = fields[key]
        try:
            found[key] = kind(value)
        except ValueError:
            raise bad(f"has {key!r} as {value!r}, not {_TYPE_NAMES[kind]}") from None
    missing = [key for key in required if key not in found]
    if missing:
        raise bad(f"lacks {', '.join(repr(k) for k in missing)}")
    return found


def read(
    path: Path,
    *,
    what: str,
    fields: Mapping[str, type],
    required: Collection[str] = (),
    hint: str | None = None,
) -> dict[str, Value] | None:
    """The record in ``path``; ``None`` when there is no such file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise RecordFileError(
            f"cannot read the {what} {path}: {err.strerror or err}", path=os.fspath(path), hint=hint
        ) from err
    return decode(data, path=path, what=what, fields=fields, required=required, hint=hint)


def write(path: Path, fields: Mapping[str, Value]) -> None:
    """Replace ``path`` with the record, atomically (a reader sees the old one or the new)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode(fields))
    os.replace(tmp, path)
