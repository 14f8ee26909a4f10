"""What a direct-libkrun run reads from the host before anything is planned (nothing is created
here): the libkrun this process can load, /dev/kvm, the image's digest in Buildah's storage and
its image cache entry, and the task root backends this host can use."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

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
    from agentbox_podman import buildah

    profiler.meta("image", req.image)
    profiler.meta("task", req.task_id)
    try:
        library = load(environ, face.library_env).name
    except KrunLoadError as err:
        raise PhaseError(f"{face.name} needs libkrun: {err.message}", hint=err.hint) from err
    with profiler.phase("kvm_check"):
        skipped = environ.get(face.env_prefix + kvm.SKIP_SUFFIX) == "1"
        found = None if skipped else kvm.probe()
    if local_digest is None:

        def local_digest(ref: str) -> str | None:
            return buildah.local_image_digest(runner, ref, debug=req.debug)

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
        kvm=found, userns=tuple(buildah.unshare(debug=req.debug)) if req.uid != 0 else (),
        current=current, cached=cached, backends=backends,
    )  # fmt: skip


def _existing(path: Path) -> Path:
    """``path``, or the nearest of its parents that exists."""
    while not os.path.exists(path) and path.parent != path:
        path = path.parent
    return path
