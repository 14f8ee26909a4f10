"""TOML configuration files, validated against a schema of tables and keys.

A missing file means defaults. Every problem names the file, the key path and the bad value, and
says what is accepted. Nothing here writes files.
"""

from __future__ import annotations

import os

from agentbox_state.errors import ConfigError, UsageError
from agentbox_state.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    Schema = Mapping[str, Mapping[str, "Key"]]


class Invalid(Exception):  # noqa: N818 - internal signal, never escapes this module
    """Raised by a converter: ``reason`` says what is wrong with the value."""

    def __init__(self, reason: str, hint: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


class Key(Record, kw_only=True):
    """One accepted key: ``accepted`` describes valid values in words; ``convert`` checks one;
    ``default`` is the effective value when the file does not set it. ``env`` names the
    environment variable that overrides the file; ``from_env`` turns its text into a value for
    ``convert`` (the text itself when absent)."""

    accepted: str
    convert: Callable[[object], object]
    default: object = None
    env: str | None = None
    from_env: Callable[[str], object] | None = None


def toml_repr(value: object) -> str:
    """Show a parsed TOML value the way it would be written in the file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_repr(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_repr(v) for v in value) + "]"
    return str(value)


def _type_name(value: object) -> str:
    return {
        bool: "a boolean", int: "an integer", float: "a float", str: "a string",
        dict: "a table", list: "an array",
    }.get(type(value), f"a {type(value).__name__}")  # fmt: skip


def string(value: object) -> str:
    """Converter: any string."""
    if not isinstance(value, str):
        raise Invalid(f"is {_type_name(value)}, not a string")
    return value


def absolute_path(value: object) -> str:
    """Converter: a non-empty, absolute path string (no ``~``, nothing relative); trailing
    slashes are dropped, nothing else is rewritten."""
    value = string(value)
    if not value:
        raise Invalid("is empty")
    if not os.path.isabs(value):
        hint = "write the full path; ~ and relative paths are not expanded"
        raise Invalid("is a relative path", hint)
    return value.rstrip("/") or "/"


def one_of(*choices: str, hints: Mapping[str, str] | None = None) -> Callable[[object], str]:
    """Converter factory: one of ``choices``; ``hints`` maps known wrong spellings to advice."""

    def convert(value: object) -> str:
        value = string(value)
        if value not in choices:
            raise Invalid("is not one of the accepted values", (hints or {}).get(value))
        return value

    return convert


def string_list(value: object) -> tuple[str, ...]:
    """Converter: an array of non-empty strings without whitespace (package names)."""
    if not isinstance(value, list):
        raise Invalid(f"is {_type_name(value)}, not an array of strings")
    for item in value:
        if not isinstance(item, str) or not item or any(c.isspace() for c in item):
            raise Invalid(f"has the element {toml_repr(item)}, not a name without spaces")
    return tuple(value)


def whole_number_text(text: str) -> object:
    """``from_env`` for numbers: decimal digits become an int; anything else stays text (and
    ``convert`` then says what is wrong with it)."""
    return int(text) if text.isascii() and text.isdigit() else text


def non_negative_int(value: object) -> int:
    """Converter: a whole number >= 0 (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"is {_type_name(value)}, not a whole number")
    if value < 0:
        raise Invalid("is negative")
    return value


def boolean(value: object) -> bool:
    """Converter: true or false."""
    if not isinstance(value, bool):
        raise Invalid(f"is {_type_name(value)}, not true or false")
    return value


class ConfigFile(Record, kw_only=True):
    """What a config file said (``values`` maps ``table.key`` to converted values) and what the
    environment overrides (``overrides`` maps ``table.key`` to the value and its variable)."""

    path: str
    exists: bool
    # both copied by __post_init__, so the class-level defaults are never shared
    values: Mapping[str, object] = {}
    overrides: Mapping[str, tuple[object, str]] = {}

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", dict(self.values))
        object.__setattr__(self, "overrides", dict(self.overrides))

    def get(self, key_path: str) -> object | None:
        """The effective value: the environment's, else the file's (None: neither set it)."""
        if key_path in self.overrides:
            return self.overrides[key_path][0]
        return self.values.get(key_path)


def env_overrides(schema: Schema, environ: Mapping[str, str]) -> dict[str, tuple[object, str]]:
    """The keys whose ``env`` variable is set, converted like file values; a bad value is a
    ``UsageError`` naming the variable."""
    found: dict[str, tuple[object, str]] = {}
    for table_name, keys in schema.items():
        for key_name, spec in keys.items():
            if spec.env is None or spec.env not in environ:
                continue
            text = environ[spec.env]
            raw = spec.from_env(text) if spec.from_env is not None else text
            try:
                found[f"{table_name}.{key_name}"] = (spec.convert(raw), spec.env)
            except Invalid as bad:
                hint = f"it must be {spec.accepted}, like [{table_name}].{key_name}; or unset it"
                raise UsageError(
                    f"{spec.env}={text!r} {bad.reason}",
                    hint=f"{hint}; {bad.hint}" if bad.hint else hint,
                ) from None
    return found


def _accepted_tables(schema: Schema) -> str:
    return ", ".join(f"[{t}]" for t in schema)


def validate(path: str, data: Mapping[str, object], schema: Schema) -> dict[str, object]:
    """Check parsed TOML against ``schema``; return ``{"table.key": converted}``."""
    values: dict[str, object] = {}
    for table_name, table in data.items():
        if table_name not in schema:
            if isinstance(table, dict):
                msg = f"unknown table [{table_name}]"
            else:
                msg = f"unknown top-level key {table_name} = {toml_repr(table)}"
            raise ConfigError(
                msg,
                path=path,
                key_path=table_name,
                hint=f"accepted tables: {_accepted_tables(schema)}; remove or rename it",
            )
        keys = schema[table_name]
        if not isinstance(table, dict):
            raise ConfigError(
                f"{table_name} = {toml_repr(table)} is {_type_name(table)}, not a table",
                path=path,
                key_path=table_name,
                hint=f"write it as a table: [{table_name}] with keys {', '.join(keys)}",
            )
        for key_name, raw in table.items():
            key_path = f"{table_name}.{key_name}"
            if key_name not in keys:
                raise ConfigError(
                    f"unknown key {key_path} = {toml_repr(raw)}",
                    path=path,
                    key_path=key_path,
                    hint=f"accepted keys in [{table_name}]: {', '.join(keys)}",
                )
            spec = keys[key_name]
            try:
                values[key_path] = spec.convert(raw)
            except Invalid as bad:
                hint = f"{key_path} must be {spec.accepted}"
                if bad.hint:
                    hint = f"{hint}; {bad.hint}"
                raise ConfigError(
                    f"{key_path} = {toml_repr(raw)} {bad.reason}",
                    path=path,
                    key_path=key_path,
                    hint=hint,
                ) from None
    return values


def load_config(path: str, schema: Schema, environ: Mapping[str, str] | None = None) -> ConfigFile:
    """Read and validate ``path`` (a file that does not exist gives an empty config), then take
    the environment's overrides from ``environ``."""
    overrides = env_overrides(schema, environ or {})
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return ConfigFile(path=path, exists=False, overrides=overrides)
    except OSError as err:
        raise ConfigError(
            f"cannot read the config file: {err.strerror or err}",
            path=path,
            hint="make it a readable regular file, or remove it to use the defaults",
        ) from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"is not UTF-8 text (bad byte at offset {err.start})",
            path=path,
            hint="save the file as UTF-8",
        ) from None
    import tomllib  # only when there is a file: keeps it off the common start-up path

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            f"is not valid TOML: {err}",
            path=path,
            hint="fix the syntax there, or move the file away to use the defaults",
        ) from None
    return ConfigFile(path=path, exists=True, values=validate(path, data, schema),
                      overrides=overrides)  # fmt: skip


STATE_TABLE: dict[str, Key] = {
    "location": Key(
        accepted='an absolute path such as "/srv/state" (state then lives in /srv/state/<app>)',
        convert=absolute_path,
    ),
}
