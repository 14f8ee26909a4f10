from pathlib import Path

import pytest

from agentbox_podman import buildah
from agentbox_podman.buildah import BuildahImageSource, OpenedImage
from agentbox_podman.errors import PodmanError
from agentbox_state.testing import RecordingRunner


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (buildah.from_image("localhost/x:1"),
         ["buildah", "from", "--pull=never", "--quiet", "localhost/x:1"]),
        (buildah.from_image("x", pull="missing"),
         ["buildah", "from", "--pull=missing", "--quiet", "x"]),
        (buildah.inspect_digest("c1"),
         ["buildah", "inspect", "--type", "container", "--format", "{{.FromImageDigest}}", "c1"]),
        (buildah.image_digest("localhost/loftd:latest"),
         ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageDigest}}",
          "localhost/loftd:latest"]),
        (buildah.mount("c1"), ["buildah", "mount", "c1"]),
        (buildah.umount("c1"), ["buildah", "umount", "c1"]),
        (buildah.rm("c1"), ["buildah", "rm", "c1"]),
        (buildah.unshare("python3", "-m", "x"), ["buildah", "unshare", "python3", "-m", "x"]),
        (buildah.from_scratch(), ["buildah", "from", "--quiet", "scratch"]),
        (buildah.add("c1", "/b.tar"), ["buildah", "add", "--quiet", "c1", "/b.tar", "/"]),
        (buildah.copy("c1", "/src", "/dst"), ["buildah", "copy", "--quiet", "c1", "/src", "/dst"]),
        (buildah.run("c1", ["apt-get", "update"]),
         ["buildah", "run", "--isolation", "chroot", "--network", "host", "c1", "--", "apt-get",
          "update"]),
        (buildah.config("c1", entrypoint=["/bin/x", "enter", "--"], cmd=["fish", "-l"],
                        env={"LANG": "C.UTF-8"}, labels={"a.b": "1"}, workingdir="/workspace"),
         ["buildah", "config", "--entrypoint", '["/bin/x", "enter", "--"]', "--cmd",
          '["fish", "-l"]', "--env", "LANG=C.UTF-8", "--label", "a.b=1", "--workingdir",
          "/workspace", "c1"]),
        (buildah.commit("c1", "localhost/a:1"),
         ["buildah", "commit", "--quiet", "--rm", "c1", "localhost/a:1"]),
        (buildah.image_label("localhost/a:1", "agentbox.stage"),
         ["buildah", "inspect", "--type", "image", "--format",
          '{{index .OCIv1.Config.Labels "agentbox.stage"}}', "localhost/a:1"]),
        (buildah.tag("localhost/a:1", "localhost/b:2"), ["buildah", "tag", "localhost/a:1",
                                                         "localhost/b:2"]),
    ],
)  # fmt: skip
def test_argv(built: list[str], expected: list[str]) -> None:
    assert built == expected


def test_bad_pull_policy() -> None:
    with pytest.raises(ValueError, match="pull policy 'sometimes'"):
        buildah.from_image("x", pull="sometimes")


def test_open_sequence_and_cleanup() -> None:
    rec = RecordingRunner()
    rec.script("buildah", "from", stdout="c1\n")
    rec.script("buildah", "inspect", stdout="sha256:abc\n")
    rec.script("buildah", "mount", stdout="/var/lib/c1/merged\n")
    with BuildahImageSource(rec).open("x:1") as image:
        assert image == OpenedImage("x:1", "sha256:abc", Path("/var/lib/c1/merged"), "c1")
    assert rec.argvs == [
        buildah.from_image("x:1"), buildah.inspect_digest("c1"), buildah.mount("c1"),
        buildah.umount("c1"), buildah.rm("c1"),
    ]  # fmt: skip


def test_cleanup_runs_when_the_body_fails() -> None:
    rec = RecordingRunner()
    rec.script("buildah", "from", stdout="c1\n")
    with pytest.raises(RuntimeError), BuildahImageSource(rec).open("x:1"):
        raise RuntimeError("copy failed")
    assert rec.argvs[-2:] == [buildah.umount("c1"), buildah.rm("c1")]


def test_unknown_image() -> None:
    rec = RecordingRunner()
    rec.script("buildah", "from", returncode=125, stderr="Error: image not known\n")
    with pytest.raises(PodmanError) as caught, BuildahImageSource(rec).open("nope:1"):
        pass
    assert caught.value.message.startswith("cannot open image nope:1: `buildah from")
    assert caught.value.hint == (
        "build it first (agentbox image build) or check the name: buildah images"
    )
    assert rec.argvs == [buildah.from_image("nope:1")]


def test_local_image_digest() -> None:
    rec = RecordingRunner()
    rec.script("buildah", "inspect", stdout="sha256:" + "a" * 64 + "\n")
    assert buildah.local_image_digest(rec, "localhost/x:1") == "sha256:" + "a" * 64
    absent = RecordingRunner()
    absent.script("buildah", "inspect", returncode=125,
                  stderr="Error: importing settings: localhost/x:1: image not known\n")  # fmt: skip
    assert buildah.local_image_digest(absent, "localhost/x:1") is None
    broken = RecordingRunner()
    broken.script("buildah", "inspect", returncode=125, stderr="Error: database is locked\n")
    with pytest.raises(PodmanError) as caught:
        buildah.local_image_digest(broken, "localhost/x:1")
    assert caught.value.message == (
        "buildah could not inspect image localhost/x:1 (exit status 125): Error: database is locked"
    )  # never taken for "not there"
