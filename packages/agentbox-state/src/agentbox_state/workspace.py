"""Workspace identity: which project directory a run belongs to, and the names derived from it."""

from __future__ import annotations

import os

from agentbox_state.errors import AgentboxError
from agentbox_state.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

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


# the global option that lets a workspace hold the user's home directory
ALLOW_HOME_FLAG = "--allow-home"


def _within(inner: str, outer: str) -> bool:
    """Whether canonical ``inner`` is ``outer`` or lies below it."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def check_mountable(workspace: Workspace, *, home: str, private: Sequence[tuple[str, str]],
                    allow_home: bool) -> None:  # fmt: skip
    """Refuse a workspace that would hand a sandbox what is not the project's (pure).

    A workspace that is or contains the home directory (``/`` included) would show the agent
    ``~/.ssh``, cloud credentials and browser profiles: refused unless ``allow_home``. One that
    holds a ``private`` path (``(what, path)``: agentbox's own state, config, keys) is refused
    always. Paths are compared canonically.
    """
    path = workspace.path
    real_home = os.path.realpath(home) if home else ""
    if real_home and _within(real_home, path) and not allow_home:
        which = "your home directory" if path == real_home else f"your home directory {real_home}"
        raise AgentboxError(
            f"refusing the workspace {path}: it {'is' if path == real_home else 'contains'} "
            f"{which}, and the sandbox would see all of it (~/.ssh, credentials, browser "
            "profiles)",
            hint=f"cd into the project's own directory, or pass {ALLOW_HOME_FLAG} to share "
            "it anyway",
        )
    for what, p in private:
        real = os.path.realpath(p)
        if _within(real, path):
            raise AgentboxError(
                f"refusing the workspace {path}: it contains {what} {real}, which no sandbox "
                "may see",
                hint="cd into the project's own directory, or move that state out of it "
                "([state] location in the config, or XDG_STATE_HOME)",
            )


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
