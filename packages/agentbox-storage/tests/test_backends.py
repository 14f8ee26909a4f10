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


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 7:0 / /srv/cache rw,relatime shared:5 - btrfs /dev/loop0 rw
41 40 0:50 / /srv/cache/tmp rw - tmpfs tmpfs rw
42 22 7:1 / /srv/cache\\040two rw - xfs /dev/loop1 rw
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/srv/cache/images/sha256/x/rootfs", "btrfs"),
        ("/srv/cache", "btrfs"),
        ("/srv/cache/tmp/a", "tmpfs"),
        ("/srv/cachet", "ext4"),  # a prefix of the name is not a parent dir
        ("/srv/cache two/x", "xfs"),  # escaped space in the mount point
        ("/home/u", "ext4"),
    ],
)
def test_filesystem_type_is_the_longest_containing_mount(path: str, kind: str) -> None:
    from agentbox_storage.mounts import fstype_of

    assert fstype_of(path, MOUNTINFO) == kind


def test_the_real_mount_table_knows_proc() -> None:
    from pathlib import Path

    from agentbox_storage.mounts import filesystem_type

    assert filesystem_type(Path("/proc/self")) == "proc"


def _select(backend: Backend, fs: str, tools: tuple[str, ...]) -> tuple[Backend, ...]:
    from pathlib import Path

    from agentbox_storage.taskroot import select

    return select(backend, Path("/c/rootfs"), which=lambda t: f"/bin/{t}" if t in tools else None,
                  fstype=lambda _p: fs)  # fmt: skip


def test_auto_keeps_what_the_host_can_use() -> None:
    snap, fuse = Backend.BTRFS_SNAPSHOT, Backend.FUSE_OVERLAY
    both = ("btrfs", "fuse-overlayfs")
    assert _select(Backend.AUTO, "btrfs", both) == (snap, fuse)
    assert _select(Backend.AUTO, "ext4", both) == (fuse,)
    assert _select(Backend.AUTO, "btrfs", ("btrfs",)) == (snap,)
    # an explicit choice is tried as asked; its own error is the precise one
    assert _select(Backend.REFLINK, "ext4", ()) == (Backend.REFLINK,)


def test_auto_with_nothing_usable_says_why_for_each() -> None:
    with pytest.raises(StorageError) as caught:
        _select(Backend.AUTO, "ext4", ())
    assert caught.value.message == (
        "no task root backend is usable here for auto:\n"
        "  btrfs-snapshot: the image cache /c/rootfs is on ext4\n"
        "  fuse-overlay: fuse-overlayfs is missing (apt-get install fuse-overlayfs)"
    )
    with pytest.raises(StorageError, match="btrfs-snapshot: the btrfs command is missing"):
        _select(Backend.AUTO, "btrfs", ())
