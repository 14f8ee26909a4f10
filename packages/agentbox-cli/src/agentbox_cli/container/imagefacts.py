"""What ``podman image inspect`` says about an image, asked once and remembered.

Container mode's cold start needs the image's ID (the sidecar runs it, and the overlay is made
from it), its entry point (the contract check) and its storage driver (the vfs warning). The
answer is kept in ``<base>/image-facts.json`` together with a stamp of Podman's image index
(``images.json``, rewritten by every build, tag, pull and removal; ``agentbox_podman.imageindex``):
while the stamp holds, the answer holds, so a start after the sidecar's idle grace asks Podman
nothing about the image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from agentbox_podman import podman
from agentbox_podman.errors import PodmanError
from agentbox_podman.imageindex import (
    holds,
    overlay_index,
    read_answers,
    storage_key,
    write_answers,
)
from agentbox_podman.imageindex import store_stamp as store_stamp  # the sidecar's, too
from agentbox_state.runner import Runner, command_failed


class ImageFacts(NamedTuple):
    """What ``podman image inspect`` says about the image (one call, on the cold path)."""

    id: str
    entrypoint: list[str]
    store_index: str  # the storage's images.json, whose change means "maybe a new ID"; or ""
    store_stamp: str = ""  # of that index, taken before the inspect when it was known
    driver: str = ""  # the storage driver (vfs copies whole images: warned about once)


def with_stamp(facts: ImageFacts, index: str, before: str) -> ImageFacts:
    """``facts`` with the index's stamp: the one taken before the inspect (so a change during
    or after it shows as a change next time), or, the first time, one taken now (pure but for
    that stat)."""
    stamp = before if index == facts.store_index and before else store_stamp(facts.store_index)
    return facts._replace(store_stamp=stamp)


FACTS_FORMAT = ("{{.Id}}\t{{json .Config.Entrypoint}}\t{{.GraphDriver.Name}}\t"
                "{{.GraphDriver.Data.UpperDir}}")  # fmt: skip


def inspect_argv(image: str, *, debug: bool) -> list[str]:
    return [*podman.podman_argv(debug=debug), "image", "inspect", "--format", FACTS_FORMAT, image]


class FactsCache:
    """``podman image inspect`` answers, asked at most once per image and index: the image
    resolution's "is it here?" (``exists``) is the answer the cold start needs
    (``found``). With a ``store`` file, answers whose index stamp still holds are reused
    across runs and new ones are written back (best effort: a cache that cannot be written
    only costs the next run an inspect)."""

    def __init__(self, runner: Runner, *, debug: bool, known_index: str = "",
                 store: Path | None = None,
                 environ: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self.runner, self.debug, self.store = runner, debug, store
        self.environ: Mapping[str, str] = environ or {}  # its storage config: in each key
        self.found: dict[str, ImageFacts] = {}  # stamped as ``with_stamp`` does
        self.kept = read_kept(store) if store is not None else {}
        self.known_index = known_index or next(
            (f.store_index for f in self.kept.values() if f.store_index), ""
        )

    def exists(self, image: str) -> bool:
        """Whether ``image`` is in local storage; its facts are kept when it is."""
        kept = self.kept.get(self._key(image))
        if kept is not None and holds(kept.store_index, kept.store_stamp):
            self.found[image] = kept
            return True
        argv = inspect_argv(image, debug=self.debug)
        before = store_stamp(self.known_index)
        done = self.runner.run(argv, check=False)
        if done.returncode == 0:
            facts = with_stamp(parse_facts(done.stdout), self.known_index, before)
            self.found[image] = facts
            self._keep(image, facts)
            return True
        if _not_known(done.stderr):
            return False
        raise command_failed(argv, done.returncode, done.stderr)

    def facts(self, image: str) -> ImageFacts:
        """The image's facts, asked once; a missing image is pulled (as ``podman run`` would),
        and when that fails the error says which image is missing and how to get it."""
        from agentbox_cli.imageref import pull_missing

        if image in self.found or self.exists(image):
            return self.found[image]
        pull_missing(image, self.runner, debug=self.debug)
        if not self.exists(image):
            raise PodmanError(f"{image} was pulled, but podman image inspect does not know it")
        return self.found[image]

    def _key(self, image: str) -> str:
        return storage_key(image, self.environ)

    def _keep(self, image: str, facts: ImageFacts) -> None:
        if self.store is None or not facts.store_stamp:
            return
        self.kept[self._key(image)] = facts
        with contextlib.suppress(OSError):  # only a cache
            write_kept(self.store, self.kept)


def read_kept(path: Path) -> dict[str, ImageFacts]:
    """The remembered answers; a missing, unreadable or foreign file is an empty cache."""
    images: dict[str, Any] = read_answers(path, KEPT_FORMAT)
    try:
        return {
            key: ImageFacts(str(f["id"]), [str(w) for w in f["entrypoint"]],
                            str(f["store_index"]), str(f["store_stamp"]), str(f["driver"]))
            for key, f in images.items()
        }  # fmt: skip
    except (KeyError, TypeError):
        return {}


def write_kept(path: Path, kept: dict[str, ImageFacts]) -> None:
    write_answers(path, KEPT_FORMAT, {k: f._asdict() for k, f in kept.items()})


KEPT_FORMAT = "agentbox image facts 1"


def _not_known(stderr: str) -> bool:
    said = "\n".join(podman.tool_messages(stderr))
    return "image not known" in said or "no such image" in said.lower()


def parse_facts(out: str) -> ImageFacts:
    """``podman image inspect``'s answer in ``FACTS_FORMAT`` (pure)."""
    import json

    fields = out.strip().split("\t")
    if len(fields) != 4 or not fields[0]:
        raise PodmanError(f"cannot understand podman image inspect's answer: {out.strip()!r}")
    image_id, entry, driver, upper = fields
    try:
        parsed = json.loads(entry)
    except ValueError:
        parsed = None
    entrypoint = [str(w) for w in parsed] if isinstance(parsed, list) else []
    return ImageFacts(image_id, entrypoint, overlay_index(driver, upper), driver=driver)
