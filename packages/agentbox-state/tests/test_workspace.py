import re
from pathlib import Path

import pytest

from agentbox_state.workspace import HASH_LEN, Workspace, path_hash, slugify


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
