import re
from pathlib import Path

import pytest

from agentbox_state.errors import AgentboxError
from agentbox_state.workspace import (
    HASH_LEN,
    Workspace,
    check_mountable,
    path_hash,
    slugify,
)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("app", "app"),
        ("My Project", "my-project"),
        ("__init__", "init"),
        ("a--b__c", "a-b-c"),
        ("Ünïcödé", "n-c-d"),
        ("---", "workspace"),
        ("", "workspace"),
        ("日本", "workspace"),
        ("x" * 40, "x" * 32),
        ("a" * 31 + "-b", "a" * 31),  # cut at 32 leaves a trailing dash, trimmed again
        ("Rust.Proj_v2", "rust-proj-v2"),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_two_projects_named_app_never_share_state(tmp_path: Path) -> None:
    first = tmp_path / "one" / "app"
    second = tmp_path / "two" / "app"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    a, b = Workspace.from_path(first), Workspace.from_path(second)
    assert a.slug == b.slug == "app"
    assert a.key != b.key
    assert re.fullmatch(rf"app-[0-9a-f]{{{HASH_LEN}}}", a.key)


def test_identity_is_the_canonical_path(tmp_path: Path) -> None:
    real = tmp_path / "real" / "proj"
    real.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    via_link = Workspace.from_path(link)
    assert via_link.path == str(real)
    assert via_link == Workspace.from_path(real)
    assert via_link.key == f"proj-{path_hash(str(real))}"


def test_names_derived_from_the_workspace(tmp_path: Path) -> None:
    ws = Workspace.from_path(tmp_path / "My App")
    assert ws.hostname == "my-app-agentbox"
    assert ws.task_name(bytes(range(8))) == "my-app-0001020304050607"
    random_names = {ws.task_name() for _ in range(20)}
    assert len(random_names) == 20
    assert all(re.fullmatch(r"my-app-[0-9a-f]{16}", n) for n in random_names)


def test_hash_is_stable() -> None:
    # The hash names state dirs on disk: changing it would orphan every user's state.
    assert path_hash("/home/dev/src/app") == "671822104ddc"


def test_workspace_is_an_immutable_value(tmp_path: Path) -> None:
    ws = Workspace.from_path(tmp_path)
    with pytest.raises(AttributeError, match="Workspace is immutable; cannot set slug"):
        ws.slug = "other"  # type: ignore[misc]  # mypy knows it is frozen too
    assert ws == Workspace.from_path(str(tmp_path))
    assert hash(ws) == hash(Workspace.from_path(tmp_path))
    assert repr(ws).startswith(f"Workspace(key='{ws.key}', path='{tmp_path}'")


def refusal(workspace: Path, home: Path, *, allow_home: bool = False,
            private: tuple[tuple[str, str], ...] = ()) -> str:  # fmt: skip
    """The message and hint of the refusal, or "" when the workspace may be mounted."""
    try:
        check_mountable(Workspace.from_path(workspace), home=str(home), private=private,
                        allow_home=allow_home)  # fmt: skip
    except AgentboxError as err:
        return f"{err.message} | {err.hint}"
    return ""


def test_the_home_directory_and_what_holds_it_are_refused(tmp_path: Path) -> None:
    home = tmp_path / "home" / "u"
    (home / "project").mkdir(parents=True)
    assert refusal(home, home) == (
        f"refusing the workspace {home}: it is your home directory, and the sandbox would see "
        "all of it (~/.ssh, credentials, browser profiles) | cd into the project's own "
        "directory, or pass --allow-home to share it anyway"
    )
    for holder in (tmp_path / "home", Path("/")):
        assert refusal(holder, home).startswith(
            f"refusing the workspace {holder}: it contains your home directory {home}, and"
        ), holder
    assert refusal(home / "project", home) == ""  # a project below home is what it is for
    # a name that only starts like the workspace's is not inside it
    assert refusal(tmp_path / "home" / "u", tmp_path / "home" / "u-two") == ""
    assert refusal(home, home, allow_home=True) == ""


def test_the_home_is_compared_canonically(tmp_path: Path) -> None:
    home = tmp_path / "u"
    home.mkdir()
    (tmp_path / "link").symlink_to(home)
    assert refusal(tmp_path / "link", home).startswith(f"refusing the workspace {home}: it is")
    assert refusal(home, tmp_path / "link").startswith(f"refusing the workspace {home}: it is")


def test_a_workspace_holding_agentbox_state_is_refused_even_with_allow_home(
    tmp_path: Path,
) -> None:
    home, state = tmp_path / "u", tmp_path / "u" / ".local/state/agentbox"
    state.mkdir(parents=True)
    private = (("the agentbox state", str(state)),)
    assert refusal(home, home, allow_home=True, private=private) == (
        f"refusing the workspace {home}: it contains the agentbox state {state}, which no "
        "sandbox may see | cd into the project's own directory, or move that state out of it "
        "([state] location in the config, or XDG_STATE_HOME)"
    )
    assert refusal(state.parent, tmp_path / "elsewhere", private=private) != ""
    assert refusal(state / "workspaces", tmp_path / "elsewhere", private=private) == ""
