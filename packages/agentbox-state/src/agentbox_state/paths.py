"""Where an application's configuration and state live, resolved from an injected environment.

XDG base directories are read from the given mapping (never from ``os.environ`` behind the
caller's back), so tests and callers decide what the environment is. platformdirs is not used:
it reads the process environment itself and accepts relative XDG values, which we refuse.
``StatePaths`` and a workspace's ``WorkspaceLayout`` hand out ``Path`` objects, each said once
here; callers join nothing themselves. ``pathlib`` is imported only once paths are resolved:
it costs more to import than the rest of the start-up of ``--help``.
"""

from __future__ import annotations

import os

from agentbox_state.errors import StatePathError
from agentbox_state.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

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


def cache_dir(app: str, environ: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/<app>``, else ``~/.cache/<app>``: what can be made again."""
    from pathlib import Path  # see StatePaths.resolve

    root, _ = _xdg_dir(environ, "XDG_CACHE_HOME", ".cache")
    return Path(root, app)


class WorkspaceLayout(Record, kw_only=True):
    """Where one workspace's state lives: its dir (the disks and the files an app keeps per
    project are in it, by the names that app gives them) and its ``locks`` dir."""

    workspace: Workspace
    state_dir: Path

    @property
    def locks_dir(self) -> Path:
        return self.state_dir / "locks"

    def disk(self, file_name: str) -> Path:
        """A disk image of the workspace (``libkrun-nix.raw``, ...): in its state dir."""
        return self.state_dir / file_name

    def lock(self, name: str = "workspace") -> FileLock:
        """The advisory lock ``name`` of the workspace (``workspace``, or a disk's name), kept
        in its ``locks`` dir; taking it creates that dir."""
        from agentbox_state.lock import FileLock

        path = self.workspace.path
        what = f"workspace {path}" if name == "workspace" else f"{name} of {path}"
        return FileLock(self.locks_dir / f"{name}.lock", what=what)


class StatePaths(Record, kw_only=True):
    """The state layout of one application (``agentbox`` or ``loftd``) for one user."""

    app: str
    config_file: Path
    base: Path
    base_source: str

    @classmethod
    def resolve(cls, app: str, environ: Mapping[str, str], config: ConfigFile) -> StatePaths:
        """``[state].location/<app>`` if configured, else ``$XDG_STATE_HOME/<app>``, else
        ``~/.local/state/<app>``."""
        from pathlib import Path  # about 18 ms here (re, fnmatch, urllib): not for --help

        location = config.get("state.location")
        if isinstance(location, str):
            root, source = location, f"{config.path} [state].location"
        else:
            root, source = _xdg_dir(environ, "XDG_STATE_HOME", ".local/state")
        return cls(app=app, config_file=Path(config.path), base=Path(root, app),
                   base_source=source)  # fmt: skip

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

    def layout(self, workspace: Workspace) -> WorkspaceLayout:
        """Where ``workspace``'s state lives (``workspaces/<key>``)."""
        return WorkspaceLayout(workspace=workspace, state_dir=self.workspaces / workspace.key)

    def workspace_dir(self, workspace: Workspace) -> Path:
        """``layout(workspace).state_dir``, for the call sites not yet moved to ``layout``."""
        return self.layout(workspace).state_dir
