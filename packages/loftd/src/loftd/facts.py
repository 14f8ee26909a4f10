"""What a direct-libkrun run reads from the host before anything is planned (nothing is created
here): the libkrun this process can load, /dev/kvm, the image's digest in Buildah's storage
(remembered while the storage's image index is unchanged: the run keeps a new answer) and its
image cache entry, and the task root backends this host can use."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

from agentbox_krun import kvm
from agentbox_krun.errors import KrunLoadError
from agentbox_krun.ffi import load
from agentbox_state.profile import Profiler
from agentbox_state.runner import Runner
from agentbox_storage import taskroot
from agentbox_storage.backends import Backend
from agentbox_storage.imagecache import CacheEntry, ImageCache, pinned_digest
from loftd.runtime import Face, PhaseError, TaskRequest, phase

# What the helper (the user's own VMM process) inherits beyond the runner's usual few: how the
# dynamic loader finds libkrun's own dependencies (libkrun opens libkrunfw.so.N by name when the
# VM starts, so a library found through LD_LIBRARY_PATH here must be found there too) and
# libkrun's logging filter (RUST_LOG; krun_init_log with NO_ENV ignores it).
HELPER_PASSTHROUGH = ("LD_LIBRARY_PATH", "LD_PRELOAD", "RUST_LOG")


@dataclass(frozen=True, slots=True, kw_only=True)
class HostFacts:
    library: str  # the libkrun this process loaded: the helper is pointed at the same one
    python: str  # the interpreter the ingest child and the helper run under
    passthrough: tuple[tuple[str, str], ...]  # HELPER_PASSTHROUGH variables set here
    kvm: kvm.KvmFacts | None  # None: <PREFIX>SKIP_KVM_CHECK=1 says not to ask
    userns: tuple[str, ...]  # Buildah's user namespace (rootless), else nothing
    current: str | None  # the image's digest in local Buildah storage (None: absent, unasked)
    cached: CacheEntry | None  # the image cache's valid entry for it (None: a miss)
    backends: tuple[Backend, ...]  # the task root backends to try, in order
    # Buildah's answer for ``current``, to remember once the run goes ahead (None: nothing new)
    remember: DigestAnswer | None = None


def probe_host(
    face: Face,
    req: TaskRequest,
    runner: Runner,
    profiler: Profiler,
    *,
    environ: Mapping[str, str],
    local_digest: Callable[[str], str | None] | None = None,
) -> HostFacts:
    """Read what the plan needs; a missing libkrun ends the run here, before anything else."""
    profiler.meta("image", req.image)
    profiler.meta("task", req.task_id)
    try:
        library = load(environ, face.library_env).name
    except KrunLoadError as err:
        raise PhaseError(f"{face.name} needs libkrun: {err.message}", hint=err.hint) from err
    with profiler.phase("kvm_check"):
        skipped = environ.get(face.env_prefix + kvm.SKIP_SUFFIX) == "1"
        found = None if skipped else kvm.probe()
    answers: list[DigestAnswer] = []
    if local_digest is None:

        def local_digest(ref: str) -> str | None:
            digest, new = remembered_digest(runner, ref, debug=req.debug, environ=environ,
                                            store=req.images_dir / DIGESTS_FILE)  # fmt: skip
            answers.extend([new] if new is not None else [])
            return digest

    cache = ImageCache(req.images_dir)
    current = cached = None
    with phase(profiler, "image_reference_resolution", f"{face.name} image reference resolution"):
        if req.pull != "always":  # --pull-latest: always ingest (Buildah pulls), whatever is cached
            current = None if pinned_digest(req.image) else local_digest(req.image)
            cached = cache.lookup(req.image, current=current)
        profiler.meta("image_cache", "hit" if cached else "miss")
    with phase(profiler, "storage_backend_selection", f"{face.name} storage backend selection"):
        # on a miss, the filesystem the ingest will put the image's rootfs on
        source = cached.rootfs if cached is not None else _existing(req.images_dir)
        backends = taskroot.select(req.backend, source)
    return HostFacts(
        library=library, python=sys.executable,
        passthrough=tuple((k, environ[k]) for k in HELPER_PASSTHROUGH if environ.get(k)),
        kvm=found, userns=_userns(req),
        current=current, cached=cached, backends=backends, remember=next(iter(answers), None),
    )  # fmt: skip


DIGESTS_FILE = "local-digests.json"  # in the image cache's root
DIGESTS_FORMAT = "agentbox local image digests 1"


@dataclass(frozen=True, slots=True)
class DigestAnswer:
    """Buildah's digest for ``key``, stamped with its storage's image index as it was before the
    inspect (so a change during it shows next time): kept in ``store`` by ``keep``."""

    store: Path
    key: str
    digest: str
    store_index: str
    store_stamp: str


def remembered_digest(runner: Runner, ref: str, *, debug: bool, environ: Mapping[str, str],
                      store: Path) -> tuple[str | None, DigestAnswer | None]:  # fmt: skip
    """``buildah.local_image_digest``, and the answer to keep when it was asked. An answer kept
    in ``store`` holds while the stamp of Buildah's image index does: the warm path asks Buildah
    nothing. The index is the one the kept answer was stamped against, else the one
    ``buildah info`` reports; an absent image is not kept (nor anything without an index)."""
    from agentbox_podman import imageindex

    key = imageindex.storage_key(ref, environ)
    found = _answers(store).get(key)
    if found is not None and imageindex.holds(found["store_index"], found["store_stamp"]):
        return found["digest"], None
    from agentbox_podman import buildah  # only when Buildah is asked: not on the warm path

    # the index this answer was stamped against (another key may be another storage's)
    index = found["store_index"] if found else imageindex.buildah_index(runner, debug=debug)
    before = imageindex.store_stamp(index)
    digest = buildah.local_image_digest(runner, ref, debug=debug)
    if digest is None or not before:
        return digest, None
    return digest, DigestAnswer(store, key, digest, index, before)


def keep(answer: DigestAnswer) -> None:
    """Remember ``answer`` with the others in its file (best effort: only a cache, so the next
    run asks Buildah again when it cannot be written)."""
    from agentbox_podman import imageindex

    answers = _answers(answer.store)
    answers[answer.key] = {"digest": answer.digest, "store_index": answer.store_index,
                           "store_stamp": answer.store_stamp}  # fmt: skip
    with contextlib.suppress(OSError):
        imageindex.write_answers(answer.store, DIGESTS_FORMAT, answers)


def _answers(store: Path) -> dict[str, dict[str, str]]:
    from agentbox_podman import imageindex

    kept = imageindex.read_answers(store, DIGESTS_FORMAT)
    return {k: a for k, a in kept.items() if _digest_answer(a)}


def _digest_answer(answer: object) -> TypeGuard[dict[str, str]]:
    return isinstance(answer, dict) and set(answer) == {"digest", "store_index", "store_stamp"} \
        and all(isinstance(v, str) for v in answer.values())  # fmt: skip


def _userns(req: TaskRequest) -> tuple[str, ...]:
    if req.uid == 0:
        return ()
    from agentbox_podman import buildah  # rootless only: a warm run as root imports none of it

    return tuple(buildah.unshare(debug=req.debug))


def _existing(path: Path) -> Path:
    """``path``, or the nearest of its parents that exists."""
    while not os.path.exists(path) and path.parent != path:
        path = path.parent
    return path
