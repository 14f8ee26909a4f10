"""Where an application's configuration and state live, resolved from an injected environment.

XDG base directories are read from the given mapping (never from ``os.environ`` behind the
caller's back), so tests and callers decide what the environment is. platformdirs is not used:
it reads the process environment itself and accepts relative XDG values, which we refuse.
Paths are ``str`` here: this module is on every command's start-up path, and ``pathlib`` costs
more to import than the rest of it (see ``agentbox_state.record``).
"""

from __future__ import annotations

import os

from agentbox_state.errors import StatePathError
from agentbox_state.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from agentbox_state.config import ConfigFile
    from agentbox_state.lock import FileLock
    from agentbox_state.workspace import Workspace


def _xdg_dir(environ: Mapping[str, str], var: str, fallback: str) -> tuple[str, str]:
    value = environ.get(var, "")
    if value:
        if not os.path.isabs(value):
            raise StatePathError(
                f"{var}={value!r} is a relative path",
                hint=f"set {var} to an absolute path, or unset it to use $HOME/{fallback}",
            )
        return value, f"${var}"
    home = environ.get("HOME", "")
    if not home or not os.path.isabs(home):
        raise StatePathError(
            f"cannot place files: {var} is unset and HOME is {home!r}",
            hint=f"set HOME (or {var}) to an absolute path",
        )
    return os.path.join(home, fallback), f"$HOME/{fallback}"


def config_file_path(app: str, environ: Mapping[str, str]) -> str:
    """``$XDG_CONFIG_HOME/<app>/<app>.toml``, else ``~/.config/<app>/<app>.toml``."""
    root, _ = _xdg_dir(environ, "XDG_CONFIG_HOME", ".config")
    return os.path.join(root, app, f"{app}.toml")


def cache_dir(app: str, environ: Mapping[str, str]) -> str:
    """``$XDG_CACHE_HOME/<app>``, else ``~/.cache/<app>``: what can be made again."""
    root, _ = _xdg_dir(environ, "XDG_CACHE_HOME", ".cache")
    return os.path.join(root, app)


class StatePaths(Record):
    """The state layout of one application (``agentbox`` or ``loftd``) for one user."""

    __slots__ = ("app", "base", "base_source", "config_file")
    app: str
    config_file: str
    base: str
    base_source: str

    def __init__(self, *, app: str, config_file: str, base: str, base_source: str) -> None:
        self._set(app=app, config_file=config_file, base=base, base_source=base_source)

    @classmethod
    def resolve(cls, app: str, environ: Mapping[str, str], config: ConfigFile) -> StatePaths:
        """``[state].location/<app>`` if configured, else ``$XDG_STATE_HOME/<app>``, else
        ``~/.local/state/<app>``."""
        location = config.get("state.location")
        if isinstance(location, str):
            root, source = location, f"{config.path} [state].location"
        else:
            root, source = _xdg_dir(environ, "XDG_STATE_HOME", ".local/state")
        base = os.path.join(root, app)
        return cls(app=app, config_file=config.path, base=base, base_source=source)

    @property
    def sccache(self) -> str:
        """The compiler cache shared by every workspace."""
        return os.path.join(self.base, "sccache")

    @property
    def workspaces(self) -> str:
        return os.path.join(self.base, "workspaces")

    @property
    def images(self) -> str:
        """The per-user, digest-keyed image cache."""
        return os.path.join(self.base, "images")

    def workspace_dir(self, workspace: Workspace) -> str:
        return os.path.join(self.workspaces, workspace.key)

    def locks_dir(self, workspace: Workspace) -> str:
        return os.path.join(self.workspace_dir(workspace), "locks")

    def workspace_lock(self, workspace: Workspace, name: str = "workspace") -> FileLock:
        """The advisory lock ``name`` of one workspace (``workspace``, or a disk's name), kept
        in its ``locks`` dir; taking it creates that dir."""
        from agentbox_state.lock import FileLock

        what = (
            f"workspace {workspace.path}" if name == "workspace" else f"{name} of {workspace.path}"
        )
        return FileLock(os.path.join(self.locks_dir(workspace), f"{name}.lock"), what=what)
