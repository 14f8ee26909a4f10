"""`agentbox snapshot` for real, as the ordinary test user with its state on a loop-mounted
btrfs (user_subvol_rm_allowed): a project's two sparse raw disks, its /nix overlay upper (a
plain dir) and its cargo dir (a btrfs subvolume the user made) are snapshotted, changed (on the
host, by the test user: no sandbox run), and restored byte-identical (sha256), the snapshot
staying usable; the refusal table (while a disk is leased, unknown name, damaged manifest,
hostile names) changes nothing; on an ext4 loop (no reflink) create is refused naming what
--copy would copy, and --copy works. Then inside sandbox runs: container mode's nix-daemon adds
store paths into the upper, snapshot, another path, restore: the upper is byte-identical to the
snapshot's and the next run sees the first path and not the second (that state sits on the
host's own filesystem, with --copy where it cannot reflink: rootless Podman's long-lived
namespace does not see a loop mount made after it started)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentbox_state.lock import FileLock
from agentbox_testing import btrfs_loop, require, require_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conftest import UserBox

MIB = 1024**2
DISKS = ("microvm-nix.raw", "microvm-containers.raw")


@pytest.fixture
def user_tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="agentbox-snap-") as tmp:
        os.chmod(tmp, 0o755)
        yield Path(tmp)


@pytest.fixture
def btrfs_state(user_tmp: Path, test_user: str) -> Iterator[Path]:
    import pwd

    pw = pwd.getpwnam(test_user)
    with btrfs_loop(user_tmp / "state.img", user_tmp / "state") as mnt:
        os.chown(mnt, pw.pw_uid, pw.pw_gid)
        yield mnt


@pytest.fixture
def ext4_state(user_tmp: Path, test_user: str) -> Iterator[Path]:
    """An ext4 loop mount (no reflink) the test user owns."""
    import pwd
    import shutil

    require_root("mounting a loop-device ext4")
    require(shutil.which("mkfs.ext4") is not None, "mkfs.ext4 is missing (apt-get install "
            "e2fsprogs)")  # fmt: skip
    pw = pwd.getpwnam(test_user)
    image, mnt = user_tmp / "ext4.img", user_tmp / "ext4"
    subprocess.run(["truncate", "-s", "512M", image], check=True)
    subprocess.run(["mkfs.ext4", "-q", image], check=True, capture_output=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", image, mnt], check=True)
    try:
        os.chown(mnt, pw.pw_uid, pw.pw_gid)
        yield mnt
    finally:
        subprocess.run(["umount", mnt], check=False)


def _reflinks(directory: Path) -> bool:
    from agentbox_state.runner import SubprocessRunner
    from agentbox_storage.snapshot import can_reflink

    return can_reflink(directory, SubprocessRunner(os.environ))


def as_owner(box: UserBox, *argv: str) -> None:
    subprocess.run(["runuser", "-u", box.user, "--", *argv], check=True, cwd="/tmp")


def make_state(box: UserBox, *, subvolume: bool) -> None:
    """What runs leave, made by the test user: two sparse 1 GiB disks with 4 MiB of data each,
    an upper with a store path, a cargo dir (a subvolume on btrfs)."""
    s = box.state_dir
    as_owner(box, "mkdir", "-p", f"{s}/nix/upper/store/abc-hello/bin")
    for disk in DISKS:
        as_owner(box, "truncate", "-s", "1G", f"{s}/{disk}")
        as_owner(box, "dd", "if=/dev/urandom", f"of={s}/{disk}", "bs=1M", "count=4", "seek=100",
                 "conv=notrunc", "status=none")  # fmt: skip
    as_owner(box, "sh", "-c", f"echo v1 > {s}/nix/upper/store/abc-hello/bin/hello")
    if subvolume:
        as_owner(box, "btrfs", "subvolume", "create", f"{s}/cargo")
    else:
        as_owner(box, "mkdir", f"{s}/cargo")
    as_owner(box, "sh", "-c", f"echo registry > {s}/cargo/index")


def sums(state: Path) -> dict[str, str]:
    found = {}
    for p in sorted(state.rglob("*")):
        rel = os.fspath(p.relative_to(state))
        if rel.startswith(("snapshots", "locks")) or rel.endswith(".lease"):
            continue
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(MIB):
                    h.update(chunk)
            found[rel] = h.hexdigest()
        else:
            found[rel] = "dir"
    return found


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.root
@pytest.mark.btrfs
def test_create_change_restore_as_the_user_on_btrfs(
    user_box: Callable[..., UserBox], btrfs_state: Path
) -> None:
    box = user_box(XDG_STATE_HOME=str(btrfs_state))
    make_state(box, subvolume=True)
    before = sums(box.state_dir)
    assert ok(box.run("snapshot", "create", "clean")) == (
        f"created snapshot clean of {box.project}\n"
    )
    snap = box.state_dir / "snapshots" / "clean"
    for disk in DISKS:  # clones: the 1 GiB disks' holes stay holes
        assert (snap / disk).stat().st_size == 1024 * MIB
        assert (snap / disk).stat().st_blocks * 512 <= 8 * MIB
    found = subprocess.run(["btrfs", "subvolume", "show", snap / "cargo"], capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert found.returncode == 0, found.stderr  # the cargo subvolume was snapshotted
    s = box.state_dir
    for disk in DISKS:  # what an agent's run does: writes into the disks and the upper
        as_owner(box, "dd", "if=/dev/urandom", f"of={s}/{disk}", "bs=1M", "count=2", "seek=500",
                 "conv=notrunc", "status=none")  # fmt: skip
    as_owner(box, "sh", "-c", f"echo v2 > {s}/nix/upper/store/abc-hello/bin/hello; "
             f"mkdir {s}/nix/upper/store/new; rm {s}/cargo/index")  # fmt: skip
    changed = sums(box.state_dir)
    assert changed != before
    ok(box.run("snapshot", "restore", "clean"))
    assert sums(box.state_dir) == before
    assert sums(snap) == {**before, "manifest.json": sums(snap)["manifest.json"]}  # still whole
    listed = ok(box.run("snapshot", "list")).splitlines()
    assert [line.split()[0] for line in listed][1] == "clean"
    auto = listed[0].split()[0]
    assert auto.startswith("auto-before-restore-")
    ok(box.run("snapshot", "restore", auto, "--discard-current"))
    assert sums(box.state_dir) == changed
    assert sorted(os.listdir(box.state_dir / "snapshots")) == [auto, "clean"]
    ok(box.run("snapshot", "delete", auto))
    assert sorted(os.listdir(box.state_dir / "snapshots")) == ["clean"]


@pytest.mark.root
@pytest.mark.btrfs
def test_the_refusal_table_changes_nothing(
    user_box: Callable[..., UserBox], btrfs_state: Path
) -> None:
    box = user_box(XDG_STATE_HOME=str(btrfs_state))
    make_state(box, subvolume=False)
    ok(box.run("snapshot", "create", "good"))
    state = box.state_dir

    def unchanged() -> tuple[dict[str, str], list[str]]:
        return sums(state), sorted(os.listdir(state / "snapshots"))

    before = unchanged()

    def refused(*argv: str) -> str:
        done = box.run("snapshot", *argv)
        assert (done.returncode, done.stdout) == (1, ""), done.stderr
        assert unchanged() == before
        return done.stderr

    lease_path = state / f"{DISKS[0]}.lease"
    as_owner(box, "touch", str(lease_path))
    lease = FileLock(lease_path, what="disk")  # held as a run holds it while its VM runs
    lease.acquire()
    try:
        for argv in (("create", "busy"), ("restore", "good")):
            err = refused(*argv)
            assert f"while the project's state is in use: disk {DISKS[0]} is attached " in err
            assert err.endswith("\nhint: wait for that task to end (or stop it: agentbox stop) "
                                "and retry; nothing changed\n")  # fmt: skip
    finally:
        lease.release()
    assert refused("restore", "nope") == (
        "agentbox: no snapshot named 'nope' in this project (snapshots: good)\n"
        "hint: agentbox snapshot list shows them\n"
    )
    for name in ("../x", "/", "x" * 100, ".hidden"):
        assert "snapshot name" in refused("create", name)
    assert "it starts with '-'" in refused("create", "--", "-x")  # after --: an operand
    assert "snapshot name is needed" in refused("create", "--", "")
    manifest = state / "snapshots" / "good" / "manifest.json"
    as_owner(box, "sh", "-c", f"echo garbage > {manifest}")
    before = unchanged()
    assert refused("restore", "good").startswith(
        "agentbox: refusing to restore the damaged snapshot 'good': the snapshot manifest "
    )
    assert "good  DAMAGED: " in ok(box.run("snapshot", "list"))


@pytest.mark.root
def test_no_reflink_on_ext4_refuses_with_the_cost_and_copy_copies(
    user_box: Callable[..., UserBox], ext4_state: Path
) -> None:
    box = user_box(XDG_STATE_HOME=str(ext4_state))
    make_state(box, subvolume=False)
    before = sums(box.state_dir)
    done = box.run("snapshot", "create", "x")
    assert done.returncode == 1
    assert done.stderr == (
        f"agentbox: cannot snapshot copy-on-write: {box.state_dir} is on a filesystem "
        "that cannot reflink (cp --reflink=always fails there)\n"
        "hint: --copy makes a full copy instead: 2.0 GiB written; or keep agentbox's state on "
        "btrfs (or XFS with reflink)\n"
    )
    assert not (box.state_dir / "snapshots").exists()
    ok(box.run("snapshot", "create", "x", "--copy"))
    assert sums(box.state_dir / "snapshots" / "x").keys() - {"manifest.json"} == before.keys()
    as_owner(box, "sh", "-c", f"echo v2 > {box.state_dir}/cargo/index")
    ok(box.run("snapshot", "restore", "x", "--copy", "--discard-current"))
    assert sums(box.state_dir) == before


@pytest.fixture
def plain_state(test_user: str) -> Iterator[Path]:
    """A state dir on the host's own filesystem: rootless Podman's long-lived namespace (its
    pause process) does not see a loop mount made after it started, so the sandbox runs keep
    their state here; with no reflink on it (ext4 here), the test passes --copy."""
    import pwd

    pw = pwd.getpwnam(test_user)
    with tempfile.TemporaryDirectory(prefix="agentbox-snap-state-") as tmp:
        os.chmod(tmp, 0o755)
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        yield Path(tmp)


@pytest.mark.root
@pytest.mark.podman
@pytest.mark.image
def test_a_container_run_changes_the_upper_and_restore_brings_it_back(
    user_image: str, user_box: Callable[..., UserBox], plain_state: Path
) -> None:
    """Inside sandbox runs (container mode, as the test user): /nix written through the
    sidecar's overlay into the upper (files of subordinate ids: copied in the user namespace);
    snapshot, change, restore; the next run sees the snapshot's contents and the upper is
    byte-identical to the snapshot's."""
    box = user_box(XDG_STATE_HOME=str(plain_state), AGENTBOX_SIDECAR_IDLE_GRACE="0")
    copy = () if _reflinks(plain_state) else ("--copy",)

    def reap() -> None:  # the sidecar and its overlay go (as its idle reaper does)
        box.run("internal", "sidecar-reap", "--", str(box.state_dir),
                "localhost/agentbox:latest", "0")  # fmt: skip

    def add(text: str) -> str:  # a store path added through the sidecar's nix-daemon
        out = ok(box.run("container", "--", "sh", "-c", f"echo {text} > /tmp/{text} && "
                         f"nix-store --add /tmp/{text}"))  # fmt: skip
        reap()
        return out.strip()

    try:
        v1 = add("v1")
        upper = box.state_dir / "nix" / "upper"
        assert (upper / v1.removeprefix("/nix/")).read_text() == "v1\n"
        ok(box.run("snapshot", "create", "s1", *copy))
        v2 = add("v2")
        assert (upper / v2.removeprefix("/nix/")).exists()
        ok(box.run("snapshot", "restore", "s1", *copy))
        saved = box.state_dir / "snapshots" / "s1" / "nix" / "upper"
        assert sums(upper) == sums(saved)
        assert not (upper / v2.removeprefix("/nix/")).exists()
        seen = box.run("container", "--", "sh", "-c", f"cat {v1}; nix-store --check-validity {v2}")
        assert seen.stdout == "v1\n"  # the later run sees the snapshot's store, without v2
        assert seen.returncode != 0
        assert "is not valid" in seen.stderr
    finally:
        reap()
        subprocess.run(["runuser", "-u", box.user, "--", *box.env(), "podman", "unshare", "rm",
                        "-rf", str(box.state_dir)], check=False, cwd="/tmp")  # fmt: skip
