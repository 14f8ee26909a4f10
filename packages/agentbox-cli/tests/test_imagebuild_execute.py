from pathlib import Path

import pytest

from agentbox_cli.imagebuild.execute import execute
from agentbox_cli.imagebuild.plan import (
    KEY_LABEL,
    BuildPlan,
    ImageConfig,
    Stage,
    stage_image,
    stage_key,
)
from agentbox_state.testing import RecordingRunner

D = "--log-level=debug"


def plan(tmp_path: Path, *, debug: bool) -> BuildPlan:
    base_tar = tmp_path / "base.tar"
    base_tar.write_bytes(b"")
    stages = (
        Stage(name="base", inputs="i0"),
        Stage(name="finish", inputs="i1", copies=((tmp_path / "src", "/opt/src"),),
              runs=(("sh", "-c", "true"),),
              config=ImageConfig(entrypoint=("/bin/e",), cmd=("fish",), workingdir="/w")),
    )  # fmt: skip
    return BuildPlan(tag="localhost/agentbox:latest", base_tar=base_tar, base_from="cache",
                     debootstrap=(), stages=stages, debug=debug)  # fmt: skip


@pytest.mark.parametrize(("debug", "buildah"), [(False, ["buildah"]), (True, ["buildah", D])],
                         ids=["plain", "debug"])  # fmt: skip
def test_every_buildah_call_of_a_build_carries_debug(
    tmp_path: Path, debug: bool, buildah: list[str]
) -> None:
    built = plan(tmp_path, debug=debug)
    k0 = stage_key("", built.stages[0])
    k1 = stage_key(k0, built.stages[1])
    i0, i1 = stage_image(built.stages[0], k0), stage_image(built.stages[1], k1)
    rec = RecordingRunner()
    rec.script(*buildah, "from", stdout="c1\n")
    tag = execute(built, rec, progress=lambda _: None, is_root=True)
    assert tag == "localhost/agentbox:latest"
    label = f'{{{{index .OCIv1.Config.Labels "{KEY_LABEL}"}}}}'
    assert rec.argvs == [
        [*buildah, "inspect", "--type", "image", "--format", label, i0],
        [*buildah, "from", "--quiet", "scratch"],
        [*buildah, "add", "--quiet", "c1", str(built.base_tar), "/"],
        [*buildah, "config", "--label", f"{KEY_LABEL}={k0}", "c1"],
        [*buildah, "commit", "--quiet", "--rm", "c1", i0],
        [*buildah, "inspect", "--type", "image", "--format", label, i1],
        [*buildah, "from", "--pull=never", "--quiet", i0],
        [*buildah, "copy", "--quiet", "c1", str(tmp_path / "src"), "/opt/src"],
        [*buildah, "run", "--isolation", "chroot", "--network", "host", "c1", "--", "sh", "-c",
         "true"],
        [*buildah, "config", "--entrypoint", '["/bin/e"]', "--cmd", '["fish"]',
         "--label", f"{KEY_LABEL}={k1}", "--workingdir", "/w", "c1"],
        [*buildah, "commit", "--quiet", "--rm", "c1", i1],
        [*buildah, "tag", i1, "localhost/agentbox:latest"],
    ]  # fmt: skip


def test_debug_is_no_part_of_the_stage_keys(tmp_path: Path) -> None:
    plain, debug = plan(tmp_path, debug=False), plan(tmp_path, debug=True)
    assert [stage_key("", s) for s in plain.stages] == [stage_key("", s) for s in debug.stages]


def test_an_optional_stage_that_fails_is_said_and_skipped(tmp_path: Path) -> None:
    base_tar = tmp_path / "base.tar"
    base_tar.write_bytes(b"")
    stages = (
        Stage(name="base", inputs="i0"),
        Stage(name="pip", inputs="i1", runs=(("pip", "install", "x"),),
              optional="PyPI may be unreachable; x is then missing"),
        Stage(name="finish", inputs="i2"),
    )  # fmt: skip
    built = BuildPlan(tag="t", base_tar=base_tar, base_from="cache", debootstrap=(),
                      stages=stages)  # fmt: skip
    rec = RecordingRunner()
    rec.script("buildah", "from", stdout="c1\n")
    rec.script("buildah", "run", returncode=1, stderr="Could not find a version")
    said: list[str] = []
    execute(built, rec, progress=said.append, is_root=True)
    k0 = stage_key("", stages[0])
    assert said[1].startswith("image build: warning: stage pip skipped: PyPI may be unreachable; "
                              "x is then missing (it failed: ")  # fmt: skip
    assert "Could not find a version" in said[1]
    assert [s.split(" (")[0] for s in said] == [
        "image build [1/3] base: built",
        "image build: warning: stage pip skipped: PyPI may be unreachable; x is then missing",
        "image build [2/3] pip: skipped",
        "image build [3/3] finish: built",
        "image build: t ready",
    ]
    # finish is built on the base: the failed stage left nothing
    assert ["buildah", "from", "--pull=never", "--quiet", stage_image(stages[0], k0)] in rec.argvs
