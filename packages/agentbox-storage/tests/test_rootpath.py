from pathlib import Path

import pytest

from agentbox_storage.errors import StorageError
from agentbox_storage.imagecache import check_guest_init
from agentbox_storage.rootpath import find_in_root, resolve_in_root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "usr" / "bin").mkdir(parents=True)
    (r / "bin").symlink_to("usr/bin")
    (r / "usr" / "bin" / "tool").write_text("#!/bin/sh\n")
    (r / "usr" / "bin" / "tool").chmod(0o755)
    (r / "usr" / "bin" / "abs").symlink_to("/usr/bin/tool")  # absolute: stays inside the root
    (r / "usr" / "bin" / "escape").symlink_to("../../../../../etc/passwd")
    (r / "loop").symlink_to("loop")
    for h in ("aaa", "bbb"):
        (r / "nix" / "store" / h / "bin").mkdir(parents=True)
    (r / "nix" / "store" / "aaa" / "bin" / "agentbox-guest-init").write_text("x")
    (r / "nix" / "store" / "aaa" / "bin" / "agentbox-guest-init").chmod(0o755)
    return r


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("bin/tool", "usr/bin/tool"),
        ("/bin/tool", "usr/bin/tool"),
        ("bin/abs", "usr/bin/tool"),
        ("usr/bin/../bin/tool", "usr/bin/tool"),
        ("../../bin/tool", "usr/bin/tool"),
    ],
)
def test_symlinks_resolve_inside_the_root(root: Path, relative: str, expected: str) -> None:
    assert resolve_in_root(root, relative) == root / expected


def test_escapes_and_loops(root: Path) -> None:
    assert resolve_in_root(root, "bin/escape") is None  # /etc/passwd inside the root: absent
    assert resolve_in_root(root, "loop") is None
    assert resolve_in_root(root, "missing/x") is None
    assert resolve_in_root(root, "bin/tool/x") is None


def test_patterns(root: Path) -> None:
    assert find_in_root(root, "nix/store/*/bin/agentbox-guest-init") == [
        root / "nix/store/aaa/bin/agentbox-guest-init"
    ]
    assert find_in_root(root, "bin/*") == sorted(
        [root / "usr/bin/tool"]  # abs and tool are one file; escape resolves to nothing
    )


def test_guest_init_exactly_one(root: Path) -> None:
    assert check_guest_init("img", root, "/bin/tool") == root / "usr/bin/tool"
    with pytest.raises(StorageError) as caught:
        check_guest_init("img", root, "/bin/agentbox-guest-init")
    assert (
        caught.value.message
        == "image img cannot boot: its guest init /bin/agentbox-guest-init is missing"
    )
    (root / "usr/bin/agentbox-guest-init").write_text("not executable")
    with pytest.raises(StorageError, match="is not an executable file"):
        check_guest_init("img", root, "/bin/agentbox-guest-init")
    second = root / "nix/store/bbb/bin/agentbox-guest-init"
    second.write_text("x")
    second.chmod(0o755)
    with pytest.raises(StorageError) as caught:
        check_guest_init("img", root, "nix/store/*/bin/agentbox-guest-init")
    assert caught.value.message == (
        "image img has 2 guest inits matching /nix/store/*/bin/agentbox-guest-init: "
        "/nix/store/aaa/bin/agentbox-guest-init, /nix/store/bbb/bin/agentbox-guest-init; "
        "expected exactly one"
    )
