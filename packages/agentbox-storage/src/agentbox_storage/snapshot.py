"""Copy-on-write snapshots of a project's persistent files: the primitives and the manifest.

A snapshot is a directory holding a copy of each item (a raw disk, an overlay upper, a cache
dir) under its path relative to the state dir, plus ``manifest.json`` written last. The copies
share blocks with their sources:

- a file, or a plain directory, is copied by ``cp -a --reflink=always``. coreutils' cp(1):
  "When --reflink[=always] is specified, perform a lightweight copy, where the data blocks are
  copied only when modified. If this is not possible the copy fails" -- so it never falls back
  to a full copy behind our back. A clone shares extents, so a sparse disk's holes stay holes
  (cp 9.1 refuses ``--sparse`` other than auto together with ``--reflink=always``);
- a directory that is a btrfs subvolume is snapshotted (``btrfs subvolume snapshot``): one
  ioctl, whatever its size.

Where the filesystem cannot reflink, only an explicit full copy (``copy=True``:
``cp -a --reflink=never --sparse=always``, holes kept) is made. Pure argv builders come first;
``copy_item`` and ``remove_item`` run them through the runner, with a user-namespace
``prefix`` (``buildah unshare``) for trees owned by subordinate ids.

The manifest is one JSON record per line (``agentbox_state.recordfile``): a header (format,
when, agentbox version, image ID, item count), then one line per item (path, kind, apparent
size, allocated bytes). ``read_manifest`` validates it strictly and ``problems`` checks the
items against it: a snapshot that fails either is damaged and must not be restored.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agentbox_state import recordfile
from agentbox_state.recordfile import RecordFileError
from agentbox_state.runner import Runner
from agentbox_storage import argv
from agentbox_storage.errors import StorageError

MANIFEST = "manifest.json"
FORMAT = "agentbox-snapshot/1"
FILE, DIR = "file", "dir"
BTRFS_FIRST_FREE_OBJECTID = 256  # the inode number of every btrfs subvolume's root
PROBE = ".reflink-probe"

Prefix = Sequence[str]


# -- argv ---------------------------------------------------------------------------------------
def reflink_copy(source: Path, dest: Path, prefix: Prefix = ()) -> list[str]:
    """A copy sharing every block with ``source`` (a file or a tree), or a failure."""
    return [*prefix, "cp", "-a", "--reflink=always", "--no-target-directory",
            os.fspath(source), os.fspath(dest)]  # fmt: skip


def full_copy(source: Path, dest: Path, prefix: Prefix = ()) -> list[str]:
    """A full copy of every byte written (``--sparse=always``: runs of zeros stay holes)."""
    return [*prefix, "cp", "-a", "--reflink=never", "--sparse=always", "--no-target-directory",
            os.fspath(source), os.fspath(dest)]  # fmt: skip


# -- host facts ---------------------------------------------------------------------------------
def is_subvolume(path: Path) -> bool:
    """Whether ``path`` is the root of a btrfs subvolume: inode 256 on a device of its own (a
    subvolume has its own anonymous st_dev; a plain dir shares its parent's)."""
    try:
        st = path.lstat()
        parent = path.parent.lstat()
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_ino == BTRFS_FIRST_FREE_OBJECTID
            and st.st_dev != parent.st_dev)  # fmt: skip


def can_reflink(directory: Path, runner: Runner) -> bool:
    """Whether files in ``directory`` can be cloned: ``cp --reflink=always`` of a small probe
    file made there (both removed afterwards)."""
    probe, clone = directory / PROBE, directory / (PROBE + ".clone")
    try:
        probe.write_bytes(b"agentbox reflink probe\n")
        return runner.run(reflink_copy(probe, clone), check=False).returncode == 0
    finally:
        for path in (probe, clone):
            path.unlink(missing_ok=True)


# -- copying ------------------------------------------------------------------------------------
def copy_item(source: Path, dest: Path, runner: Runner, *, copy: bool = False,
              prefix: Prefix = ()) -> str:  # fmt: skip
    """Copy ``source`` to ``dest`` (which must not exist): a subvolume snapshot when the
    source is a subvolume, else a reflink copy, or with ``copy`` a full one. Returns how
    (``subvolume-snapshot``, ``reflink`` or ``copy``)."""
    if dest.exists() or dest.is_symlink():
        raise StorageError(f"cannot copy {source} to {dest}: {dest} exists",
                           hint=f"remove {dest} first")  # fmt: skip
    if copy:
        runner.run(full_copy(source, dest, prefix))
        return "copy"
    if is_subvolume(source):
        runner.run(argv.subvolume_snapshot(source, dest, prefix))
        return "subvolume-snapshot"
    out = runner.run(reflink_copy(source, dest, prefix), check=False)
    if out.returncode != 0:
        runner.run(argv.remove_tree(dest, prefix), check=False)
        raise StorageError(
            f"cannot reflink {source} to {dest}: {out.stderr.strip() or 'cp failed'}",
            hint="snapshots need a filesystem that shares blocks (btrfs, XFS with reflink); "
            "pass --copy for a full copy",
        )
    return "reflink"


def remove_item(path: Path, runner: Runner, *, prefix: Prefix = ()) -> None:
    """Remove a copied item (a subvolume too: rmdir deletes an emptied one where the caller
    may, as root or on a btrfs mounted with user_subvol_rm_allowed)."""
    if path.exists() or path.is_symlink():
        runner.run(argv.remove_tree(path, prefix))


# -- the manifest -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    path: str  # relative to the state dir (and to the snapshot dir)
    kind: str  # FILE or DIR
    size: int  # apparent bytes (a tree's: the sum of its files')
    allocated: int  # bytes allocated when it was taken (shared with the source)


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    created: float  # seconds since the epoch
    agentbox: str  # the version that took it
    image: str  # the image ID the project last ran, or ""
    items: tuple[Item, ...]


_HEADER = {"format": str, "created": float, "agentbox": str, "image": str, "items": int}
_ITEM = {"path": str, "kind": str, "size": int, "allocated": int}


def measure(path: Path) -> tuple[str, int, int]:
    """(kind, apparent bytes, allocated bytes) of a file or tree, not following symlinks."""
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        return FILE, st.st_size, st.st_blocks * 512
    from agentbox_storage.statedir import walk

    size = allocated = 0
    for entry in walk(os.fspath(path)):  # a dir of a subordinate id, 0700: not counted
        try:
            est = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        allocated += est.st_blocks * 512
        if not stat.S_ISDIR(est.st_mode):
            size += est.st_size
    return DIR, size, allocated


def write_manifest(snapshot: Path, manifest: Manifest) -> None:
    header: dict[str, str | int | float] = {
        "format": FORMAT, "created": manifest.created, "agentbox": manifest.agentbox,
        "image": manifest.image, "items": len(manifest.items),
    }  # fmt: skip
    lines = [recordfile.encode(header)]
    lines += [recordfile.encode({"path": i.path, "kind": i.kind, "size": i.size,
                                 "allocated": i.allocated}) for i in manifest.items]  # fmt: skip
    tmp = snapshot / (MANIFEST + ".tmp")
    with open(tmp, "wb") as f:
        f.write(b"".join(lines))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, snapshot / MANIFEST)


def _relative(value: str) -> bool:
    parts = value.split("/")
    return (
        bool(value) and not value.startswith("/") and all(p not in ("", ".", "..") for p in parts)
    )


def read_manifest(snapshot: Path) -> Manifest:
    """The manifest of ``snapshot``; a ``RecordFileError`` when it is missing or not exactly
    what ``write_manifest`` writes."""
    path = snapshot / MANIFEST
    hint = "this snapshot is damaged: agentbox snapshot delete removes it"
    try:
        lines = path.read_bytes().splitlines()
    except OSError as err:
        raise RecordFileError(
            f"cannot read the snapshot manifest {path}: {err.strerror or err}",
            path=os.fspath(path),
            hint=hint,
        ) from None
    if not lines:
        raise RecordFileError(f"the snapshot manifest {path} is empty", path=os.fspath(path),
                              hint=hint)  # fmt: skip
    what = "snapshot manifest"
    head = recordfile.decode(lines[0], path=path, what=what, fields=_HEADER,
                             required=tuple(_HEADER), hint=hint)  # fmt: skip
    if head["format"] != FORMAT:
        raise RecordFileError(f"the {what} {path} has the format {head['format']!r}, not "
                              f"{FORMAT!r}", path=os.fspath(path), hint=hint)  # fmt: skip
    if head["items"] != len(lines) - 1:
        raise RecordFileError(f"the {what} {path} names {head['items']} item(s) but lists "
                              f"{len(lines) - 1}", path=os.fspath(path), hint=hint)  # fmt: skip
    items = []
    for line in lines[1:]:
        rec = recordfile.decode(line, path=path, what=what, fields=_ITEM, required=tuple(_ITEM),
                                hint=hint)  # fmt: skip
        rel, kind = str(rec["path"]), str(rec["kind"])
        if not _relative(rel) or rel == MANIFEST or kind not in (FILE, DIR):
            raise RecordFileError(f"the {what} {path} lists the item {rel!r} of kind {kind!r}",
                                  path=os.fspath(path), hint=hint)  # fmt: skip
        items.append(Item(path=rel, kind=kind, size=int(rec["size"]),
                          allocated=int(rec["allocated"])))  # fmt: skip
    return Manifest(created=float(head["created"]), agentbox=str(head["agentbox"]),
                    image=str(head["image"]), items=tuple(items))  # fmt: skip


def problems(snapshot: Path, manifest: Manifest) -> list[str]:
    """What is wrong with the snapshot's items against its manifest (empty: it validates):
    each item must be there, of its kind, and a file of its recorded size."""
    found = []
    for item in manifest.items:
        path = snapshot / item.path
        try:
            st = path.lstat()
        except OSError:
            found.append(f"{item.path} is missing")
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        if item.kind == DIR and not is_dir:
            found.append(f"{item.path} is not a directory")
        elif item.kind == FILE and not stat.S_ISREG(st.st_mode):
            found.append(f"{item.path} is not a regular file")
        elif item.kind == FILE and st.st_size != item.size:
            found.append(f"{item.path} is {st.st_size} bytes, the manifest says {item.size}")
    return found
