"""Strict parsers for user-facing values: disk sizes and boolean environment variables."""

from __future__ import annotations

from collections.abc import Mapping

from agentbox_state.errors import UsageError

GIB = 1024**3
TIB = 1024**4

_SIZE_UNITS = {
    "": GIB,
    "G": GIB, "g": GIB, "GiB": GIB, "GIB": GIB, "gib": GIB,
    "T": TIB, "t": TIB, "TiB": TIB, "TIB": TIB, "tib": TIB,
}  # fmt: skip

# A sparse file's length must fit ftruncate's signed 64-bit off_t.
MAX_SIZE_BYTES = 2**63 - 1

SIZE_ACCEPTED = "a positive whole number of GiB or TiB, like 128, 128G, 128GiB, 2T or 2TiB"


def parse_disk_size(text: str, *, what: str = "size") -> int:
    """Parse a disk size into bytes; a bare integer means GiB.

    Accepts ``G``/``GiB`` and ``T``/``TiB`` suffixes (in the spellings listed in ``_SIZE_UNITS``).
    Rejects zero, negatives, decimals, other units and anything with spaces, saying what is
    accepted.
    """
    digits_end = 0
    while digits_end < len(text) and text[digits_end] in "0123456789":
        digits_end += 1
    digits, unit = text[:digits_end], text[digits_end:]
    problem = None
    if not digits:
        problem = "it does not start with a whole number"
    elif unit not in _SIZE_UNITS:
        problem = f"the unit {unit!r} is not accepted"
    elif int(digits) == 0:
        problem = "it is zero"
    if problem is None:
        size = int(digits) * _SIZE_UNITS[unit]
        if size <= MAX_SIZE_BYTES:
            return size
        problem = "it is larger than a file can be"
    raise UsageError(
        f"invalid {what} {text!r}: {problem}",
        hint=f"give {SIZE_ACCEPTED}",
    )


def format_size(size: int) -> str:
    """Render a byte count the way sizes are accepted back, exact when possible (``64GiB``)."""
    for unit, factor in (("TiB", TIB), ("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def human_size(size: int) -> str:
    """A byte count for people to read, to one decimal (``1.5 GiB``)."""
    for unit, factor in (("TiB", TIB), ("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
BOOL_ACCEPTED = "1, true, yes or on to enable; 0, false, no or off to disable"


def parse_bool(value: str, *, name: str) -> bool:
    """Parse a boolean environment value; anything but the accepted words is an error."""
    word = value.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise UsageError(
        f"invalid value {value!r} for {name}",
        hint=f"set {name} to {BOOL_ACCEPTED}, or unset it",
    )


def env_flag(environ: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    """Read boolean ``name`` from ``environ``; unset means ``default``."""
    if name not in environ:
        return default
    return parse_bool(environ[name], name=name)
