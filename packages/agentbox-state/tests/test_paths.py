from pathlib import Path

import pytest

from agentbox_state.config import ConfigFile
from agentbox_state.errors import StatePathError
from agentbox_state.paths import StatePaths, config_file_path
from agentbox_state.workspace import Workspace

NO_FILE = ConfigFile(path="/cfg/agentbox/agentbox.toml", exists=False)


@pytest.mark.parametrize(
    ("environ", "base", "source"),
    [
        ({"HOME": "/home/u"}, "/home/u/.local/state/agentbox", "$HOME/.local/state"),
        ({"HOME": "/home/u", "XDG_STATE_HOME": "/xs"}, "/xs/agentbox", "$XDG_STATE_HOME"),
        ({"XDG_STATE_HOME": "/xs"}, "/xs/agentbox", "$XDG_STATE_HOME"),
        ({"HOME": "/home/u", "XDG_STATE_HOME": ""}, "/home/u/.local/state/agentbox",
         "$HOME/.local/state"),
    ],
)  # fmt: skip
def test_state_base_from_environment(environ: dict[str, str], base: str, source: str) -> None:
    paths = StatePaths.resolve("agentbox", environ, NO_FILE)
    assert paths.base == Path(base)
    assert paths.base_source == source


def test_config_location_moves_the_base() -> None:
    cfg = ConfigFile(path=NO_FILE.path, exists=True, values={"state.location": "/srv/s"})
    paths = StatePaths.resolve("loftd", {"HOME": "/home/u", "XDG_STATE_HOME": "/xs"}, cfg)
    assert paths.base == Path("/srv/s/loftd")
    assert paths.base_source == "/cfg/agentbox/agentbox.toml [state].location"


def test_layout(tmp_path: Path) -> None:
    paths = StatePaths.resolve("agentbox", {"HOME": "/home/u"}, NO_FILE)
    ws = Workspace.from_path(tmp_path)
    base = "/home/u/.local/state/agentbox"
    layout = paths.layout(ws)
    assert paths.sccache == Path(f"{base}/sccache")
    assert paths.images == Path(f"{base}/images")
    assert layout.state_dir == paths.workspace_dir(ws) == Path(f"{base}/workspaces/{ws.key}")
    assert layout.locks_dir == Path(f"{base}/workspaces/{ws.key}/locks")
    assert layout.disk("libkrun-nix.raw") == Path(f"{base}/workspaces/{ws.key}/libkrun-nix.raw")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"HOME": "/home/u"}, "/home/u/.config/loftd/loftd.toml"),
        ({"HOME": "/home/u", "XDG_CONFIG_HOME": "/xc"}, "/xc/loftd/loftd.toml"),
    ],
)
def test_config_file_path(environ: dict[str, str], expected: str) -> None:
    assert config_file_path("loftd", environ) == expected


def test_relative_xdg_is_refused() -> None:
    with pytest.raises(StatePathError) as caught:
        StatePaths.resolve("agentbox", {"HOME": "/h", "XDG_STATE_HOME": "state"}, NO_FILE)
    assert caught.value.message == "XDG_STATE_HOME='state' is a relative path"
    assert caught.value.hint == (
        "set XDG_STATE_HOME to an absolute path, or unset it to use $HOME/.local/state"
    )


@pytest.mark.parametrize("environ", [{}, {"HOME": ""}, {"HOME": "relative"}])
def test_no_home(environ: dict[str, str]) -> None:
    with pytest.raises(StatePathError) as caught:
        config_file_path("agentbox", environ)
    assert caught.value.message == (
        f"cannot place files: XDG_CONFIG_HOME is unset and HOME is {environ.get('HOME', '')!r}"
    )
    assert caught.value.hint == "set HOME (or XDG_CONFIG_HOME) to an absolute path"


def test_workspace_lock(tmp_path: Path) -> None:
    from agentbox_state.errors import LockHeldError

    paths = StatePaths.resolve("agentbox", {"HOME": str(tmp_path / "home")}, NO_FILE)
    ws = Workspace.from_path(tmp_path)
    layout = paths.layout(ws)
    with layout.lock() as lock:
        assert str(lock.path) == f"{layout.locks_dir}/workspace.lock"
        with pytest.raises(LockHeldError) as caught:
            layout.lock().acquire()
        assert caught.value.message.startswith(f"workspace {ws.path} is in use: its lock ")
        disk = layout.lock("libkrun-nix.raw")
        disk.acquire()  # a different name is a different lock
        with pytest.raises(LockHeldError) as caught:
            layout.lock("libkrun-nix.raw").acquire()
        assert caught.value.message.startswith(f"libkrun-nix.raw of {ws.path} is in use")
        disk.release()
