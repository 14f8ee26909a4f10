"""The image index of containers-storage, and answers about images remembered while it holds.

Every build, tag, pull and removal rewrites the storage's image index,
``<graph root>/<driver>-images/images.json`` (containers-storage's layout), so its stamp (inode,
size and modification time) changing means "maybe another image under that name". An answer
about an image (``podman image inspect`` for container mode, Buildah's digest for the
direct-libkrun runtime) is kept in a small JSON file of the caller's,
``{"format": ..., "images": {key: answer}}``, with the index and its stamp, and reused while
the stamp holds. The file is only a cache: a missing, unreadable or foreign one is empty.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from agentbox_state.runner import Runner


def index_path(graph_root: str, driver: str) -> str:
    """The image index of the storage at ``graph_root`` with ``driver``; "" when either is
    unknown (no absolute root, no driver name)."""
    if not graph_root.startswith("/") or not driver or "/" in driver:
        return ""
    return os.path.join(graph_root, f"{driver}-images", "images.json")


def overlay_index(driver: str, upper: str) -> str:
    """The index of the storage an overlay image's ``UpperDir`` is in
    (``<graph root>/overlay/<layer>/diff``); "" for any other driver or shape."""
    if driver != "overlay" or not upper.startswith("/") or not upper.endswith("/diff"):
        return ""
    return index_path(os.path.dirname(os.path.dirname(os.path.dirname(upper))), driver)


INFO_FORMAT = "{{.store.GraphRoot}}\t{{.store.GraphDriverName}}"


def info_argv(*, debug: bool) -> list[str]:
    """``buildah info``'s graph root and driver: where Buildah's storage keeps its index."""
    from agentbox_podman.buildah import buildah_argv

    return [*buildah_argv(debug=debug), "info", "--format", INFO_FORMAT]


def buildah_index(runner: Runner, *, debug: bool) -> str:
    """The index of Buildah's storage, as ``buildah info`` reports it; "" when it cannot say
    (then nothing is remembered: only a cache)."""
    done = runner.run(info_argv(debug=debug), check=False)
    fields = done.stdout.strip().split("\t")
    if done.returncode != 0 or len(fields) != 2:
        return ""
    graph_root, driver = fields
    return index_path(graph_root, driver)


def store_stamp(index: str) -> str:
    """Changes whenever the storage rewrites its image index (a build, tag, pull or removal);
    "" when there is no index to stamp."""
    if not index:
        return ""
    try:
        st = os.stat(index)
    except OSError:
        return ""
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def holds(index: str, stamp: str) -> bool:
    """Whether an answer stamped ``stamp`` still holds for ``index``."""
    return bool(stamp) and store_stamp(index) == stamp


def storage_key(image: str, environ: Mapping[str, str]) -> str:
    """The key of an answer about ``image``: with the storage config it was asked under
    (another ``CONTAINERS_STORAGE_CONF`` is another storage, so another answer)."""
    storage = environ.get("CONTAINERS_STORAGE_CONF", "")
    return f"{image}\t{storage}" if storage else image


def read_answers(path: Path, fmt: str) -> dict[str, object]:
    """The answers kept in ``path`` in format ``fmt``; {} for a missing, unreadable or foreign
    file (the caller checks each answer's shape)."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    images = data.get("images") if isinstance(data, dict) and data.get("format") == fmt else None
    return {str(k): v for k, v in images.items()} if isinstance(images, dict) else {}


def write_answers(path: Path, fmt: str, answers: Mapping[str, object]) -> None:
    """Replace ``path`` with ``answers`` (atomically: a reader sees the old or the new)."""
    import json

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{os.fspath(path)}.{os.getpid()}.tmp"
    data = {"format": fmt, "images": dict(answers)}
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
