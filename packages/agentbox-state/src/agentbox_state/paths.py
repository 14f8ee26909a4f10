"""Where an application's configuration and state live, resolved from an injected environment.

XDG base directories are read from the given mapping (never from ``os.environ`` behind the
caller's back), so tests and callers decide what the environment is. platformdirs is not used:
it reads the process environment itself and accepts relative XDG values, which we refuse.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentbox_state.config import ConfigFile
from agentbox_state.errors import StatePathError
from agentbox_state.workspace import Workspace


def _xdg_dir(environ: Mapping[str, str], var: str, fallback: str) -> tuple[Path, str]:
    value = environ.get(var, "")
    if value:
        if not os.path.isabs(value):
            raise StatePathError(
                f"{var}={value!r} is a relative path",
                hint=f"set {var} to an absolute path, or unset it to use $HOME/{fallback}",
            )
        return Path(value), f"${var}"
    home = environ.get("HOME", "")
    if not home or not os.path.isabs(home):
        raise StatePathError(
            f"cannot place files: {var} is unset and HOME is {home!r}",
            hint=f"set HOME (or {var}) to an absolute path",
        )
    return Path(home) / fallback, f"$HOME/{fallback}"


def config_file_path(app: str, environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/<app>/<app>.toml``, else ``~/.config/<app>/<app>.toml``."""
    root, _ = _xdg_dir(environ, "XDG_CONFIG_HOME", ".config")
    return root / app / f"{app}.toml"


@dataclass(frozen=True, slots=True, kw_only=True)
class StatePaths:
    """The state layout of one application (``agentbox`` or ``loftd``) for one user."""

    app: str
    config_file: Path
    base: Path
    base_source: str

    @classmethod
    def resolve(cls, app: str, environ: Mapping[str, str], config: ConfigFile) -> StatePaths:
        """``[state].location/<app>`` if configured, else ``$XDG_STATE_HOME/<app>``, else
        ``~/.local/state/<app>``."""
        location = config.get("state.location")
        if isinstance(location, Path):
            root, source = location, f"{os.fspath(config.path)} [state].location"
        else:
            root, source = _xdg_dir(environ, "XDG_STATE_HOME", ".local/state")
        return cls(app=app, config_file=config.path, base=root / app, base_source=source)

    @property
    def sccache(self) -> Path:
        """The compiler cache shared by every workspace."""
        return self.base / "sccache"

    @property
    def workspaces(self) -> Path:
        return self.base / "workspaces"

    @property
    def images(self) -> Path:
        """The per-user, digest-keyed image cache."""
        return self.base / "images"

    def workspace_dir(self, workspace: Workspace) -> Path:
        return self.workspaces / workspace.key

    def locks_dir(self, workspace: Workspace) -> Path:
        return self.workspace_dir(workspace) / "locks"
