"""Workspace identity: which project directory a run belongs to, and the names derived from it."""

from __future__ import annotations

import os

from agentbox_state.errors import AgentboxError
from agentbox_state.record import Record

SLUG_MAX = 32
HASH_LEN = 12


def slugify(name: str) -> str:
    """A readable, host-name-safe slug: lowercase ASCII alphanumerics and single dashes.

    Runs of anything else collapse to one ``-``; the result is trimmed of dashes, cut to
    :data:`SLUG_MAX` characters and trimmed again; ``workspace`` when nothing is left.
    """
    out: list[str] = []
    for ch in name:
        if ch.isascii() and ch.isalnum():
            out.append(ch.lower())
        elif out and out[-1] != "-":
            out.append("-")
    slug = "".join(out).strip("-")[:SLUG_MAX].strip("-")
    return slug or "workspace"


def path_hash(path: str) -> str:
    """A short, stable hash of a canonical path (hex, :data:`HASH_LEN` characters)."""
    import hashlib  # OpenSSL, a few ms: only when a workspace is identified, not for --help

    digest = hashlib.sha256(os.fsencode(path)).hexdigest()
    return digest[:HASH_LEN]


class Workspace(Record, kw_only=True):
    """A project directory, identified by its canonical path.

    ``key`` (``<slug>-<hash>``) names its state dir: two projects with the same folder name get
    different keys because the hash covers the whole canonical path.
    """

    path: str
    slug: str
    key: str

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Workspace:
        canonical = os.path.realpath(path)
        slug = slugify(os.path.basename(canonical))
        return cls(path=canonical, slug=slug, key=f"{slug}-{path_hash(canonical)}")

    @property
    def hostname(self) -> str:
        return f"{self.slug}-agentbox"

    def task_name(self, token: bytes | None = None) -> str:
        """``<slug>-<16 hex>``; ``token`` (8 bytes) is random unless given."""
        raw = os.urandom(8) if token is None else token
        if len(raw) != 8:
            raise ValueError("a task token is exactly 8 bytes")
        return f"{self.slug}-{raw.hex()}"


def current_workspace() -> Workspace:
    """The workspace of the current directory, with a clear error if it is gone."""
    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        raise AgentboxError(
            "the current directory no longer exists",
            hint="cd into your project directory and run the command again",
        ) from None
    return Workspace.from_path(cwd)
