"""The image facts container mode's cold start needs, remembered while Podman's image index
(images.json) is unchanged: a start after the idle grace asks Podman nothing about the image."""

import json
import os
from pathlib import Path

from agentbox_cli.container.imagefacts import (
    KEPT_FORMAT,
    FactsCache,
    ImageFacts,
    inspect_argv,
    store_stamp,
)
from agentbox_state.testing import RecordingRunner

IMAGE = "localhost/agentbox:latest"
ID = "f" * 64
ENTRY = '["/bin/agentbox-guest-init","default","enter","--"]'


def storage(tmp_path: Path) -> tuple[Path, str]:
    """A storage root whose index exists, and the inspect's answer for an image in it."""
    index = tmp_path / "st" / "overlay-images" / "images.json"
    index.parent.mkdir(parents=True)
    index.write_text("{}")
    return index, f"{ID}\t{ENTRY}\toverlay\t{tmp_path}/st/overlay/{'a' * 64}/diff\n"


def test_an_answer_is_kept_until_the_image_index_changes(tmp_path: Path) -> None:
    index, answer = storage(tmp_path)
    store = tmp_path / "base" / "image-facts.json"
    rec = RecordingRunner()
    rec.script(*inspect_argv(IMAGE, debug=False), stdout=answer)
    first = FactsCache(rec, debug=False, store=store)
    assert first.exists(IMAGE)
    facts = ImageFacts(ID, ["/bin/agentbox-guest-init", "default", "enter", "--"],
                       os.fspath(index), store_stamp(os.fspath(index)), "overlay")  # fmt: skip
    assert first.found == {IMAGE: facts}
    assert json.loads(store.read_text()) == {"format": KEPT_FORMAT, "images": {IMAGE: {
        "id": ID, "entrypoint": facts.entrypoint, "store_index": os.fspath(index),
        "store_stamp": facts.store_stamp, "driver": "overlay"}}}  # fmt: skip
    assert len(rec.calls) == 1

    second = FactsCache(rec, debug=False, store=store)  # the next run: no Podman
    assert second.exists(IMAGE)
    assert (second.found, len(rec.calls)) == ({IMAGE: facts}, 1)

    index.write_text('{"rebuilt": 1}')  # a build, tag, pull or removal
    third = FactsCache(rec, debug=False, store=store)
    assert third.exists(IMAGE)
    assert len(rec.calls) == 2
    # the stamp of the index as it was before that inspect (known from the kept answers)
    assert third.found[IMAGE].store_stamp == store_stamp(os.fspath(index))


def test_another_storage_config_is_another_answer(tmp_path: Path) -> None:
    _, answer = storage(tmp_path)
    store = tmp_path / "image-facts.json"
    rec = RecordingRunner()
    rec.script(*inspect_argv(IMAGE, debug=False), stdout=answer)
    assert FactsCache(rec, debug=False, store=store, environ={}).exists(IMAGE)
    other = {"CONTAINERS_STORAGE_CONF": "/etc/other.conf"}
    assert FactsCache(rec, debug=False, store=store, environ=other).exists(IMAGE)
    assert len(rec.calls) == 2
    assert FactsCache(rec, debug=False, store=store, environ=other).exists(IMAGE)
    assert len(rec.calls) == 2


def test_a_broken_cache_file_is_only_a_miss(tmp_path: Path) -> None:
    _, answer = storage(tmp_path)
    store = tmp_path / "image-facts.json"
    rec = RecordingRunner()
    rec.script(*inspect_argv(IMAGE, debug=False), stdout=answer)
    for text in (
        "not json",
        '{"format": "something else", "images": {}}',
        f'{{"format": "{KEPT_FORMAT}", "images": {{"{IMAGE}": {{"id": 1}}}}}}',
    ):
        store.write_text(text)
        assert FactsCache(rec, debug=False, store=store).exists(IMAGE)
    assert len(rec.calls) == 3
    assert FactsCache(rec, debug=False, store=store).exists(IMAGE)  # rewritten: a hit
    assert len(rec.calls) == 3


def test_a_missing_image_and_a_vfs_storage_are_never_kept(tmp_path: Path) -> None:
    store = tmp_path / "image-facts.json"
    rec = RecordingRunner()
    rec.script(*inspect_argv("x/y:1", debug=False), returncode=125,
               stderr="Error: x/y:1: image not known\n")  # fmt: skip
    rec.script(*inspect_argv("v/w:1", debug=False), stdout=f"{ID}\tnull\tvfs\t<no value>\n")
    cache = FactsCache(rec, debug=False, store=store)
    assert not cache.exists("x/y:1")
    assert cache.exists("v/w:1")  # no index to stamp: asked every time
    assert not store.exists()
