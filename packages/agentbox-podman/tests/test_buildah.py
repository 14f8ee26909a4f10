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


# buildah(1), GLOBAL OPTIONS: "--log-level value  The log level to be used. Either "trace",
# "debug", "info", "warn", "error", "fatal", or "panic", defaulting to "warn"." Like every
# Buildah flag it also takes "--log-level=debug" (checked with buildah 1.28.2 on the test host:
# `buildah --log-level=debug images` logs at debug on stderr), the spelling podman uses, so both
# tools get the same word. It goes before the verb.
D = "--log-level=debug"


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (buildah.from_image("x", pull="missing", debug=True),
         ["buildah", D, "from", "--pull=missing", "--quiet", "x"]),
        (buildah.image_digest("x", debug=True),
         ["buildah", D, "inspect", "--type", "image", "--format", "{{.FromImageDigest}}", "x"]),
        (buildah.inspect_digest("c1", debug=True),
         ["buildah", D, "inspect", "--type", "container", "--format", "{{.FromImageDigest}}",
          "c1"]),
        (buildah.mount("c1", debug=True), ["buildah", D, "mount", "c1"]),
        (buildah.umount("c1", debug=True), ["buildah", D, "umount", "c1"]),
        (buildah.rm("c1", debug=True), ["buildah", D, "rm", "c1"]),
        (buildah.unshare("python3", "-m", "x", debug=True),
         ["buildah", D, "unshare", "python3", "-m", "x"]),
        (buildah.unshare(), ["buildah", "unshare"]),
        (buildah.unshare(debug=True), ["buildah", D, "unshare"]),
        (buildah.from_scratch(debug=True), ["buildah", D, "from", "--quiet", "scratch"]),
        (buildah.add("c1", "/b.tar", debug=True),
         ["buildah", D, "add", "--quiet", "c1", "/b.tar", "/"]),
        (buildah.copy("c1", "/src", "/dst", debug=True),
         ["buildah", D, "copy", "--quiet", "c1", "/src", "/dst"]),
        (buildah.run("c1", ["true"], debug=True),
         ["buildah", D, "run", "--isolation", "chroot", "--network", "host", "c1", "--", "true"]),
        (buildah.config("c1", labels={"k": "v"}, debug=True),
         ["buildah", D, "config", "--label", "k=v", "c1"]),
        (buildah.commit("c1", "localhost/a:1", debug=True),
         ["buildah", D, "commit", "--quiet", "--rm", "c1", "localhost/a:1"]),
        (buildah.image_label("localhost/a:1", "l", debug=True),
         ["buildah", D, "inspect", "--type", "image", "--format",
          '{{index .OCIv1.Config.Labels "l"}}', "localhost/a:1"]),
        (buildah.tag("a", "b", debug=True), ["buildah", D, "tag", "a", "b"]),
    ],
    ids=["from", "image-digest", "inspect-digest", "mount", "umount", "rm", "unshare",
         "unshare-prefix", "unshare-prefix-debug", "from-scratch", "add", "copy", "run", "config",
         "commit", "image-label", "tag"],
)  # fmt: skip
def test_debug_is_buildahs_own_log_level_before_the_verb(
    built: list[str], expected: list[str]
) -> None:
    assert built == expected


def test_open_with_debug() -> None:
    rec = RecordingRunner()
    rec.script("buildah", D, "from", stdout="c1\n")
    rec.script("buildah", D, "inspect", stdout="sha256:abc\n")
    rec.script("buildah", D, "mount", stdout="/m\n")
    with BuildahImageSource(rec, pull="missing", debug=True).open("x:1") as image:
        assert image == OpenedImage("x:1", "sha256:abc", Path("/m"), "c1")
    assert rec.argvs == [
        ["buildah", D, "from", "--pull=missing", "--quiet", "x:1"],
        ["buildah", D, "inspect", "--type", "container", "--format", "{{.FromImageDigest}}",
         "c1"],
        ["buildah", D, "mount", "c1"], ["buildah", D, "umount", "c1"], ["buildah", D, "rm", "c1"],
    ]  # fmt: skip


# `buildah --log-level=debug inspect --type image ... localhost/nope:latest` on the test host:
# the error is followed by one more record, so "the last line" is not the error.
ABSENT_DEBUG = """\
time="2026-12-01T19:59:01Z" level=debug msg="Looking up image \\"localhost/x:1\\" in local containers storage"
Error: importing settings: localhost/x:1: image not known
time="2026-12-01T19:59:01Z" level=debug msg="shutting down the store"
"""  # noqa: E501


def test_local_image_digest_with_debug() -> None:
    found = RecordingRunner()
    found.script("buildah", D, "inspect", stdout="sha256:" + "b" * 64 + "\n",
                 stderr='time="t" level=debug msg="shutting down the store"\n')  # fmt: skip
    assert buildah.local_image_digest(found, "localhost/x:1", debug=True) == "sha256:" + "b" * 64
    assert found.argvs == [buildah.image_digest("localhost/x:1", debug=True)]
    absent = RecordingRunner()
    absent.script("buildah", D, "inspect", returncode=125, stderr=ABSENT_DEBUG)
    assert buildah.local_image_digest(absent, "localhost/x:1", debug=True) is None
    broken = RecordingRunner()
    broken.script("buildah", D, "inspect", returncode=125,
                  stderr="Error: database is locked\n" + ABSENT_DEBUG.splitlines()[-1])  # fmt: skip
    with pytest.raises(PodmanError) as caught:
        buildah.local_image_digest(broken, "localhost/x:1", debug=True)
    assert caught.value.message == (
        "buildah could not inspect image localhost/x:1 (exit status 125): Error: database is locked"
    )
