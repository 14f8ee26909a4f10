"""The image index of containers-storage: where it is, its stamp, and the stamped answers file
container mode and the direct-libkrun runtime keep their answers in."""

import json
import os
from pathlib import Path

import pytest

from agentbox_podman import imageindex
from agentbox_state.testing import RecordingRunner


@pytest.mark.parametrize(
    ("graph_root", "driver", "expected"),
    [
        ("/var/lib/containers/storage", "overlay",
         "/var/lib/containers/storage/overlay-images/images.json"),
        ("/home/u/.local/share/containers/storage", "vfs",
         "/home/u/.local/share/containers/storage/vfs-images/images.json"),
        ("relative/storage", "overlay", ""),
        ("/s", "", ""),
        ("/s", "../x", ""),
    ],
)  # fmt: skip
def test_the_index_of_a_storage(graph_root: str, driver: str, expected: str) -> None:
    assert imageindex.index_path(graph_root, driver) == expected


@pytest.mark.parametrize(
    ("driver", "upper", "expected"),
    [
        ("overlay", f"/s/overlay/{'a' * 64}/diff", "/s/overlay-images/images.json"),
        ("vfs", f"/s/vfs/dir/{'a' * 64}", ""),
        ("overlay", "", ""),
        ("overlay", "s/overlay/a/diff", ""),
    ],
)  # fmt: skip
def test_the_index_from_an_overlay_upper_dir(driver: str, upper: str, expected: str) -> None:
    assert imageindex.overlay_index(driver, upper) == expected


def test_buildah_info_says_where_the_index_is() -> None:
    rec = RecordingRunner()
    rec.script(*imageindex.info_argv(debug=False), stdout="/var/lib/containers/storage\toverlay\n")
    assert imageindex.buildah_index(rec, debug=True) == ""  # another argv: unscripted, empty
    assert imageindex.buildah_index(rec, debug=False) == (
        "/var/lib/containers/storage/overlay-images/images.json"
    )
    assert rec.argvs == [
        ["buildah", "--log-level=debug", "info", "--format", imageindex.INFO_FORMAT],
        ["buildah", "info", "--format", imageindex.INFO_FORMAT],
    ]
    assert imageindex.INFO_FORMAT == "{{.store.GraphRoot}}\t{{.store.GraphDriverName}}"


def test_buildah_info_failing_is_no_index() -> None:
    rec = RecordingRunner()
    rec.script("buildah", "info", returncode=125, stderr="Error: storage locked\n")
    assert imageindex.buildah_index(rec, debug=False) == ""


def test_the_stamp_changes_with_every_rewrite_of_the_index(tmp_path: Path) -> None:
    index = tmp_path / "overlay-images" / "images.json"
    assert imageindex.store_stamp(os.fspath(index)) == ""  # not there: nothing to stamp
    assert imageindex.store_stamp("") == ""
    assert not imageindex.holds(os.fspath(index), "")
    index.parent.mkdir()
    index.write_text("[]")
    stamp = imageindex.store_stamp(os.fspath(index))
    st = index.stat()
    assert stamp == f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    assert imageindex.holds(os.fspath(index), stamp)
    tmp = index.with_name("images.json.tmp")  # containers-storage replaces it whole
    tmp.write_text('[{"id": "new"}]')
    os.replace(tmp, index)
    assert not imageindex.holds(os.fspath(index), stamp)


def test_answers_are_kept_in_a_file_of_their_format(tmp_path: Path) -> None:
    path = tmp_path / "state" / "answers.json"
    assert imageindex.read_answers(path, "f 1") == {}
    answers = {"img": {"digest": "sha256:1"}}
    imageindex.write_answers(path, "f 1", answers)
    assert json.loads(path.read_text()) == {"format": "f 1", "images": answers}
    assert imageindex.read_answers(path, "f 1") == answers
    assert imageindex.read_answers(path, "f 2") == {}  # another format: a foreign file
    assert os.listdir(path.parent) == ["answers.json"]  # no temporary file left


@pytest.mark.parametrize("text", ["not json", "[]", '{"format": "f 1", "images": []}', "\xff"])
def test_a_broken_answers_file_is_empty(tmp_path: Path, text: str) -> None:
    path = tmp_path / "answers.json"
    path.write_text(text, encoding="latin-1")
    assert imageindex.read_answers(path, "f 1") == {}


def test_another_storage_config_is_another_key() -> None:
    assert imageindex.storage_key("img", {}) == "img"
    assert imageindex.storage_key("img", {"CONTAINERS_STORAGE_CONF": "/c"}) == "img\t/c"
