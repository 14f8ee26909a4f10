"""The image's digest on the warm path: Buildah's answer, remembered while the image index of
its storage is unchanged (a recording runner stands in for Buildah)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from agentbox_podman import buildah, imageindex
from agentbox_state.testing import RecordingRunner
from loftd.facts import DIGESTS_FORMAT, DigestAnswer, keep, remembered_digest

IMAGE = "localhost/x:latest"
DIGEST = "sha256:" + "ab" * 32
INSPECT = buildah.image_digest(IMAGE)
INFO = imageindex.info_argv(debug=False)


def storage(tmp_path: Path) -> tuple[RecordingRunner, Path]:
    """A Buildah whose storage (graph root ``<tmp>/st``, overlay) has ``IMAGE``."""
    index = tmp_path / "st" / "overlay-images" / "images.json"
    index.parent.mkdir(parents=True)
    index.write_text("[]")
    rec = RecordingRunner()
    rec.script(*INFO, stdout=f"{tmp_path}/st\toverlay\n")
    rec.script(*INSPECT, stdout=DIGEST + "\n")
    return rec, index


def asked(rec: RecordingRunner, store: Path, environ: dict[str, str] | None = None
          ) -> tuple[str | None, DigestAnswer | None]:  # fmt: skip
    return remembered_digest(rec, IMAGE, debug=False, environ=environ or {}, store=store)


def test_the_digest_is_asked_once_while_the_index_holds(tmp_path: Path) -> None:
    rec, index = storage(tmp_path)
    store = tmp_path / "images" / "local-digests.json"
    stamp = imageindex.store_stamp(os.fspath(index))
    answer = DigestAnswer(store, IMAGE, DIGEST, os.fspath(index), stamp)
    assert asked(rec, store) == (DIGEST, answer)
    assert rec.argvs == [INFO, INSPECT]  # the first run: where the index is, then the digest
    assert not store.exists()  # asking creates nothing: the run keeps the answer
    keep(answer)
    assert json.loads(store.read_text()) == {"format": DIGESTS_FORMAT, "images": {IMAGE: {
        "digest": DIGEST, "store_index": os.fspath(index), "store_stamp": stamp}}}  # fmt: skip

    assert asked(rec, store) == (DIGEST, None)
    assert rec.argvs == [INFO, INSPECT]  # the warm path: no Buildah, nothing new to keep

    tmp = index.with_name("images.json.tmp")  # a rebuild: the index is replaced
    tmp.write_text('[{"id": "rebuilt"}]')
    os.replace(tmp, index)
    rebuilt = "sha256:" + "cd" * 32
    rec.script(*INSPECT, stdout=rebuilt + "\n")
    new = imageindex.store_stamp(os.fspath(index))
    assert asked(rec, store) == (rebuilt, DigestAnswer(store, IMAGE, rebuilt, os.fspath(index),
                                                       new))  # fmt: skip
    assert rec.argvs == [INFO, INSPECT, INSPECT]  # the kept answer's index: no buildah info


def test_an_absent_image_is_asked_again(tmp_path: Path) -> None:
    rec, _ = storage(tmp_path)
    rec.script(*INSPECT, returncode=125, stderr="Error: localhost/x:latest: image not known\n")
    store = tmp_path / "local-digests.json"
    assert asked(rec, store) == (None, None)
    assert rec.argvs == [INFO, INSPECT]


def test_without_an_index_nothing_is_remembered(tmp_path: Path) -> None:
    rec, _ = storage(tmp_path)
    rec.script(*INFO, returncode=1, stderr="Error: no store\n")
    assert asked(rec, tmp_path / "local-digests.json") == (DIGEST, None)
    assert rec.argvs == [INFO, INSPECT]


def test_another_storage_config_and_a_broken_file_are_misses(tmp_path: Path) -> None:
    rec, index = storage(tmp_path)
    store = tmp_path / "local-digests.json"
    first = asked(rec, store)[1]
    assert first is not None
    keep(first)
    other = {"CONTAINERS_STORAGE_CONF": "/etc/other.conf"}
    second = asked(rec, store, other)[1]
    assert second == DigestAnswer(store, f"{IMAGE}\t/etc/other.conf", DIGEST, os.fspath(index),
                                  first.store_stamp)  # fmt: skip
    keep(second)
    assert rec.argvs == [INFO, INSPECT, INFO, INSPECT]
    assert set(json.loads(store.read_text())["images"]) == {IMAGE, f"{IMAGE}\t/etc/other.conf"}
    assert asked(rec, store, other) == (DIGEST, None)
    store.write_text(json.dumps({"format": DIGESTS_FORMAT, "images": {IMAGE: {"digest": 1}}}))
    assert asked(rec, store) == (DIGEST, first)
    assert rec.argvs == [INFO, INSPECT] * 3


def test_an_answer_that_cannot_be_kept_costs_only_the_next_ask(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    keep(DigestAnswer(blocked / "local-digests.json", IMAGE, DIGEST, "/i", "1:2:3"))
    assert blocked.read_text() == ""
