"""Every storage command line, pinned as a whole list."""

from pathlib import Path

import pytest

from agentbox_storage import argv

P = Path("/s/d.raw")
UNSHARE = ("buildah", "unshare")


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (argv.mkfs_btrfs(P, "AGENTBOX_NIX"),
         ["mkfs.btrfs", "--quiet", "--label", "AGENTBOX_NIX", "/s/d.raw"]),
        (argv.blkid_value(P, "TYPE"),
         ["blkid", "--probe", "--output", "value", "--match-tag", "TYPE", "/s/d.raw"]),
        (argv.losetup_attach(P), ["losetup", "--find", "--show", "/s/d.raw"]),
        (argv.losetup_refresh("/dev/loop3"), ["losetup", "--set-capacity", "/dev/loop3"]),
        (argv.losetup_detach("/dev/loop3"), ["losetup", "--detach", "/dev/loop3"]),
        (argv.mount("/dev/loop3", Path("/m")), ["mount", "/dev/loop3", "/m"]),
        (argv.mount("/dev/loop3", Path("/m"), "ro"), ["mount", "-o", "ro", "/dev/loop3", "/m"]),
        (argv.umount(Path("/m")), ["umount", "/m"]),
        (argv.btrfs_resize_max(Path("/m")), ["btrfs", "filesystem", "resize", "max", "/m"]),
        (argv.subvolume_create(Path("/c/r")), ["btrfs", "subvolume", "create", "/c/r"]),
        (argv.subvolume_snapshot(Path("/c/r"), Path("/t/r"), UNSHARE),
         ["buildah", "unshare", "btrfs", "subvolume", "snapshot", "/c/r", "/t/r"]),
        (argv.subvolume_delete(Path("/t/r"), UNSHARE),
         ["buildah", "unshare", "btrfs", "subvolume", "delete", "/t/r"]),
        (argv.stat_fstype(Path("/t")), ["stat", "--file-system", "--format", "%T", "/t"]),
        (argv.findmnt_options(Path("/t")),
         ["findmnt", "--noheadings", "--target", "/t", "--output",
          "TARGET,SOURCE,FSTYPE,OPTIONS"]),
        (argv.fuse_overlayfs(Path("/l"), Path("/u"), Path("/w"), Path("/m")),
         ["fuse-overlayfs", "-o", "lowerdir=/l,upperdir=/u,workdir=/w", "/m"]),
        (argv.copy_tree(Path("/c/r"), Path("/t/r"), reflink="always"),
         ["cp", "-a", "--reflink=always", "/c/r/.", "/t/r"]),
        (argv.copy_tree(Path("/c/r"), Path("/t/r"), reflink="auto", prefix=UNSHARE),
         ["buildah", "unshare", "cp", "-a", "--reflink=auto", "/c/r/.", "/t/r"]),
        (argv.remove_tree(Path("/t/x"), UNSHARE),
         ["buildah", "unshare", "sh", "-c", 'chmod -R u+rwX -- "$1" 2>/dev/null; rm -rf -- "$1"',
          "remove-tree", "/t/x"]),
    ],
)  # fmt: skip
def test_argv(built: list[str], expected: list[str]) -> None:
    assert built == expected


def test_fuse_unmount_order() -> None:
    assert argv.fuse_unmounts(Path("/m")) == [
        ["fusermount3", "-u", "/m"],
        ["fusermount", "-u", "/m"],
        ["umount", "/m"],
        ["fusermount3", "-u", "-z", "/m"],
        ["umount", "-l", "/m"],
    ]
