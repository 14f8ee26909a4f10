"""The per-user, digest-keyed cache of image root filesystems.

Layout under the cache root (``StatePaths.images``)::

    sha256/<hex>/rootfs/                  the image's root filesystem (a btrfs subvolume on btrfs)
    sha256/<hex>/agentbox-compatible      the marker: written last, atomically; no marker, no entry
    sha256/.<hex>.lock                    held while that digest is being ingested
    sha256/.<hex>.partial-<pid>-<ns>/     staging: renamed into place only when complete
    refs/<percent-encoded reference>      the digest a tag last resolved to: a hint, never proof

An entry is published by renaming a complete staging dir into place, so a process killed
mid-ingest leaves only staging, which is never taken for an entry and is removed by the next
ingest. Two processes ingesting one digest serialise on its lock; the second finds the entry.

Ingest runs inside the user namespace that can read the image (``buildah unshare`` rootless),
as a child process the caller starts (``ensure``'s ``ingest_argv``); ``ingest`` is what that
child calls, with an ``ImageSource`` (agentbox-podman's ``BuildahImageSource``).
"""

from __future__ import annotations

import os
import string
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agentbox_state.errors import AgentboxError, CommandError
from agentbox_state.lock import FileLock
from agentbox_state.runner import Runner
from agentbox_storage import argv
from agentbox_storage.errors import StorageError
from agentbox_storage.rootpath import find_in_root, is_executable_file
from agentbox_storage.taskroot import is_subvolume

MARKER_NAME = "agentbox-compatible"
MARKER_TEXT = "agentbox image cache 1\n"
DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "._-")


class OpenedImage(Protocol):
    @property
    def digest(self) -> str: ...

    @property
    def rootfs(self) -> Path: ...


class ImageSource(Protocol):
    """Gives an image's digest and its mounted rootfs for the duration of a ``with`` block."""

    def open(self, ref: str) -> AbstractContextManager[OpenedImage]: ...


def parse_digest(text: str) -> tuple[str, str]:
    """``sha256:<64 lowercase hex>`` (or sha512) → (algorithm, hex); anything else is refused."""
    algorithm, sep, value = text.partition(":")
    length = DIGEST_LENGTHS.get(algorithm)
    if not sep or length is None or len(value) != length or value.strip("0123456789abcdef"):
        raise StorageError(
            f"invalid image digest {text!r}",
            hint="a digest looks like sha256: followed by 64 lowercase hex digits",
        )
    return algorithm, value


def pinned_digest(ref: str) -> str | None:
    """The digest a reference pins (``name@sha256:...``), validated; None for a tag."""
    _, at, digest = ref.rpartition("@")
    if not at:
        return None
    parse_digest(digest)
    return digest


def encode_ref(ref: str) -> str:
    """A file name for a reference: ``A-Za-z0-9._-`` kept, every other byte as ``%XX``."""
    return "".join(chr(b) if chr(b) in _UNRESERVED else f"%{b:02X}" for b in ref.encode())


@dataclass(frozen=True, slots=True)
class CacheEntry:
    digest: str
    path: Path

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"


class ImageCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- layout -------------------------------------------------------------------------------
    def entry(self, digest: str) -> CacheEntry:
        algorithm, value = parse_digest(digest)
        return CacheEntry(digest, self.root / algorithm / value)

    def _hint_path(self, ref: str) -> Path:
        return self.root / "refs" / encode_ref(ref)

    def digest_lock(self, digest: str) -> FileLock:
        algorithm, value = parse_digest(digest)
        return FileLock(self.root / algorithm / f".{value}.lock", what=f"image cache {digest}")

    # -- reading ------------------------------------------------------------------------------
    def is_valid(self, digest: str) -> bool:
        entry = self.entry(digest)
        try:
            marker = (entry.path / MARKER_NAME).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            return False
        return marker == MARKER_TEXT and entry.rootfs.is_dir() and not entry.rootfs.is_symlink()

    def read_hint(self, ref: str) -> str | None:
        try:
            text = self._hint_path(ref).read_text(encoding="utf-8").strip()
            parse_digest(text)
        except (FileNotFoundError, UnicodeDecodeError, StorageError):
            return None
        return text

    def lookup(self, ref: str, *, current: str | None = None) -> CacheEntry | None:
        """The valid entry for ``ref``: by its pinned digest, else by ``current`` (the digest local
        storage has for it now, when known: a rebuilt tag is then a miss), else by the tag's
        hint (an image no longer in local storage still runs from the cache)."""
        digest = pinned_digest(ref) or current or self.read_hint(ref)
        if digest is not None and self.is_valid(digest):
            if current is not None and self.read_hint(ref) != digest:
                self.write_hint(ref, digest)
            return self.entry(digest)
        return None

    def write_hint(self, ref: str, digest: str) -> None:
        parse_digest(digest)
        path = self._hint_path(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(digest + "\n", encoding="utf-8")
        os.replace(tmp, path)

    # -- the parent's side ----------------------------------------------------------------------
    def ensure(
        self,
        ref: str,
        runner: Runner,
        *,
        ingest_argv: Callable[[str, str | None], list[str]],
        look: bool = True,
    ) -> tuple[CacheEntry, bool]:
        """The cache entry for ``ref`` and whether it was a hit. On a miss (or at once, without
        ``look``), runs ``ingest_argv(ref, pinned_digest)`` (a child that calls ``ingest`` inside
        the right user namespace and prints the digest), checks the entry it made and records
        the tag hint."""
        pinned = pinned_digest(ref)
        found = self.lookup(ref) if look else None
        if found is not None:
            return found, True
        try:
            out = runner.run(ingest_argv(ref, pinned)).stdout
        except CommandError as err:
            # the child reports like our CLIs: its "hint:" lines are the advice, the rest is why
            lines = (err.stderr_tail or err.message).splitlines()
            hints = [
                h.strip()[len("hint:") :].strip() for h in lines if h.strip().startswith("hint:")
            ]
            why = [line for line in lines if not line.strip().startswith("hint:")]
            raise StorageError(
                f"could not add image {ref} to the image cache:\n  " + "\n  ".join(why),
                hint="; ".join(hints) or err.hint or "rerun with --debug to see the ingest command",
            ) from err
        lines = [line for line in out.splitlines() if line.strip()]
        digest = lines[-1].strip() if lines else ""
        parse_digest(digest)
        if pinned is not None and digest != pinned:
            raise StorageError(f"image {ref} was cached as {digest}, not the pinned digest")
        if not self.is_valid(digest):
            raise StorageError(f"ingest of {ref} reported {digest} but left no valid cache entry")
        self.write_hint(ref, digest)
        return self.entry(digest), False

    # -- the child's side (inside the user namespace) -------------------------------------------
    def _staging_dirs(self, algorithm: str) -> Iterator[tuple[str, Path]]:
        directory = self.root / algorithm
        if not directory.is_dir():
            return
        for path in directory.iterdir():
            name = path.name
            if name.startswith(".") and ".partial-" in name and path.is_dir():
                yield f"{algorithm}:{name[1:].split('.partial-')[0]}", path

    def clean_staging(
        self, runner: Runner, *, holding: str | None = None, dry_run: bool = False,
        userns: Sequence[str] = (),
    ) -> list[Path]:  # fmt: skip
        """Remove staging dirs left by killed ingests: those of ``holding`` (whose lock we hold)
        and those whose digest lock is free. A live ingest's staging is never touched. With
        ``dry_run`` they are only listed; ``userns`` wraps the removal (outside the namespace
        the ingest ran in: ``buildah unshare`` rootless)."""
        removed = []
        for algorithm in DIGEST_LENGTHS:
            for digest, path in list(self._staging_dirs(algorithm)):
                if dry_run:
                    probe = self.digest_lock(digest).probe()
                    if digest == holding or probe is None or not probe.held:
                        removed.append(path)
                    continue
                if digest != holding:
                    lock = self.digest_lock(digest)
                    try:
                        lock.acquire()
                    except AgentboxError:
                        continue
                else:
                    lock = None
                try:
                    _remove(path, runner, userns)
                    removed.append(path)
                finally:
                    if lock is not None:
                        lock.release()
        return removed

    def entries(self) -> list[CacheEntry]:
        """Every entry dir in the cache, valid or not (staging and lock files are none)."""
        found = []
        for algorithm in DIGEST_LENGTHS:
            directory = self.root / algorithm
            if directory.is_dir():
                found += [CacheEntry(f"{algorithm}:{p.name}", p)
                          for p in sorted(directory.iterdir())
                          if not p.name.startswith(".") and p.is_dir()]  # fmt: skip
        return found

    def hints(self) -> dict[str, list[str]]:
        """digest -> the references whose tag hint names it (what tags resolve to now)."""
        from urllib.parse import unquote

        found: dict[str, list[str]] = {}
        refs = self.root / "refs"
        for path in sorted(refs.iterdir()) if refs.is_dir() else ():
            if path.name.startswith("."):
                continue
            ref = unquote(path.name)
            digest = self.read_hint(ref)
            if digest is not None:
                found.setdefault(digest, []).append(ref)
        return found

    def remove_entry(self, digest: str, runner: Runner, *, userns: Sequence[str] = ()) -> None:
        """Remove one entry, holding its digest lock (an ingest of it waits meanwhile)."""
        lock = self.digest_lock(digest)
        lock.acquire()
        try:
            entry = self.entry(digest)
            if os.path.lexists(entry.path):
                _remove(entry.path, runner, userns)
        finally:
            lock.release()

    def ingest(
        self,
        ref: str,
        source: ImageSource,
        runner: Runner,
        *,
        guest_init: str,
        expected: str | None = None,
        wait: float = 1800.0,
    ) -> CacheEntry:
        """Copy ``ref``'s rootfs into the cache (or find it there) and return its entry.

        Refuses an image whose digest differs from ``expected`` (a pinned reference) and one
        without exactly one executable ``guest_init`` (a path inside the rootfs; shell patterns
        allowed). Call inside the user namespace that can read the image's files.
        """
        with source.open(ref) as image:
            digest = image.digest
            parse_digest(digest)
            if expected is not None and digest != expected:
                raise StorageError(
                    f"image {ref} has digest {digest}, but the reference pins {expected}; "
                    "refusing to cache it",
                    hint="use the reference without @digest, or the image that has that digest",
                )
            lock = self.digest_lock(digest)
            lock.acquire(wait=wait)
            try:
                if not self.is_valid(digest):
                    self.clean_staging(runner, holding=digest)
                    self._build(ref, image.rootfs, digest, runner, guest_init)
            finally:
                lock.release()
        return self.entry(digest)

    def _build(self, ref: str, source: Path, digest: str, runner: Runner, guest_init: str) -> None:
        entry = self.entry(digest)
        staging = entry.path.with_name(f".{entry.path.name}.partial-{os.getpid()}-{time.time_ns()}")
        staging.mkdir(parents=True)
        try:
            on_btrfs = runner.run(argv.stat_fstype(staging)).stdout.strip() == "btrfs"
            rootfs = staging / "rootfs"
            if on_btrfs:
                runner.run(argv.subvolume_create(rootfs))
            else:
                rootfs.mkdir()
            runner.run(argv.copy_tree(source, rootfs, reflink="auto"))
            check_guest_init(ref, rootfs, guest_init)
            marker = staging / f".{MARKER_NAME}.tmp"
            marker.write_text(MARKER_TEXT, encoding="utf-8")
            os.replace(marker, staging / MARKER_NAME)  # the marker is the last thing written
            if os.path.lexists(entry.path):  # an invalid leftover (no marker): ours to replace
                _remove(entry.path, runner)
            os.rename(staging, entry.path)
        except BaseException:
            _remove(staging, runner)
            raise


def check_guest_init(ref: str, rootfs: Path, pattern: str) -> Path:
    """Exactly one executable file matches ``pattern`` inside ``rootfs``; return it."""
    found = find_in_root(rootfs, pattern)
    executables = [p for p in found if is_executable_file(p)]
    where = "/" + pattern.lstrip("/")
    if len(executables) == 1:
        return executables[0]
    if not executables:
        what = "is not an executable file" if found else "is missing"
        raise StorageError(
            f"image {ref} cannot boot: its guest init {where} {what}",
            hint="build the image with agentbox image build, or pass --guest-init PATH",
        )
    names = ", ".join("/" + os.path.relpath(p, rootfs) for p in executables)
    raise StorageError(
        f"image {ref} has {len(executables)} guest inits matching {where}: {names}; "
        "expected exactly one",
        hint="rebuild the image so that it holds one guest init",
    )


def _remove(path: Path, runner: Runner, userns: Sequence[str] = ()) -> None:
    """Remove a staging or stale entry dir, deleting a rootfs subvolume inside it first."""
    rootfs = path / "rootfs"
    if is_subvolume(rootfs):
        runner.run(argv.subvolume_delete(rootfs, userns), check=False)
    runner.run(argv.remove_tree(path, userns))
