import pytest

from agentbox_state.errors import AgentboxError, render_error
from agentbox_storage.backends import Backend, parse_backend
from agentbox_storage.errors import StorageError


@pytest.mark.parametrize("backend", list(Backend), ids=lambda b: b.value)
def test_every_backend_parses_by_name(backend: Backend) -> None:
    assert parse_backend(backend.value) is backend


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("btrfs", "say btrfs-snapshot ('btrfs' alone is ambiguous: reflink copies use btrfs too)"),
        ("overlay", "say fuse-overlay"),
        ("fuse-overlayfs", "say fuse-overlay"),
        ("snapshot", "say btrfs-snapshot"),
        ("copy", "choose one of: auto, btrfs-snapshot, fuse-overlay, reflink"),
        ("", "choose one of: auto, btrfs-snapshot, fuse-overlay, reflink"),
        ("Auto", "choose one of: auto, btrfs-snapshot, fuse-overlay, reflink"),
    ],
)
def test_wrong_names_are_refused_with_advice(text: str, hint: str) -> None:
    with pytest.raises(StorageError) as caught:
        parse_backend(text)
    assert caught.value.message == (
        f"unknown task root backend {text!r} (accepted: auto, btrfs-snapshot, fuse-overlay, "
        "reflink)"
    )
    assert caught.value.hint == hint


def test_allowed_subset() -> None:
    allowed = (Backend.BTRFS_SNAPSHOT, Backend.FUSE_OVERLAY)
    with pytest.raises(StorageError) as caught:
        parse_backend("reflink", allowed=allowed)
    assert caught.value.message == (
        "unknown task root backend 'reflink' (accepted: btrfs-snapshot, fuse-overlay)"
    )


def test_storage_errors_share_the_root() -> None:
    err = StorageError("disk /x.raw is not btrfs", hint="move it away")
    assert isinstance(err, AgentboxError)
    assert render_error("agentbox", err) == "agentbox: disk /x.raw is not btrfs\nhint: move it away"
