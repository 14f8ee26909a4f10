from pathlib import Path

from agentbox_cli.imagebuild.plan import (
    DEFAULT_PACKAGES,
    BuildRequest,
    plan_build,
    stage_image,
    stage_key,
)


def request(tmp_path: Path, **changes: object) -> BuildRequest:
    fields: dict[str, object] = {
        "cache_dir": tmp_path / "cache",
        "guest_init_src": tmp_path / "src",
        "guest_init_version": "0.1.0",
        **changes,
    }
    return BuildRequest(**fields)  # type: ignore[arg-type]


def keys(plan: object) -> list[str]:
    out, key = [], ""
    for stage in plan.stages:  # type: ignore[attr-defined]
        key = stage_key(key, stage)
        out.append(key)
    return out


def test_stages_and_base(tmp_path: Path) -> None:
    plan = plan_build(request(tmp_path), "digest-of-source")
    assert [s.name for s in plan.stages] == [
        "base", "packages", "host-ca", "npm", "guest-init", "finish",
    ]  # fmt: skip
    assert plan.base_from == "debootstrap"
    assert plan.base_tar == tmp_path / "cache" / "debootstrap-bookworm-minbase.tar"
    (tmp_path / "cache").mkdir()
    plan.base_tar.write_bytes(b"")
    assert plan_build(request(tmp_path), "d").base_from == "cache"
    given = plan_build(request(tmp_path, base_dir=tmp_path / "mine.tar"), "d")
    assert (given.base_from, given.base_tar) == ("base-dir", tmp_path / "mine.tar")


def test_extra_packages_and_npm(tmp_path: Path) -> None:
    plan = plan_build(request(tmp_path, packages=("htop", "git"), npm=("typescript",)), "d")
    apt = plan.stages[1].runs[0][2]
    assert apt.endswith(
        " ".join((*DEFAULT_PACKAGES, "htop")) + " >/dev/null; apt-get clean; "
        "rm -rf /var/lib/apt/lists/*"
    )
    npm = plan.stages[3].runs[0]
    assert npm[-3:] == ("@openai/codex", "@mariozechner/pi-coding-agent", "typescript")
    assert plan.stages[3].optional is not None
    labels = dict(plan.stages[-1].config.labels)  # type: ignore[union-attr]
    assert labels["agentbox.guest-init.version"] == "0.1.0"
    assert labels["agentbox.build.npm"].endswith("typescript")


def test_keys_change_only_from_the_changed_stage_on(tmp_path: Path) -> None:
    base = keys(plan_build(request(tmp_path), "source-1"))
    assert keys(plan_build(request(tmp_path), "source-1")) == base
    new_source = keys(plan_build(request(tmp_path), "source-2"))
    assert new_source[:4] == base[:4]
    assert new_source[4:] != base[4:]
    new_package = keys(plan_build(request(tmp_path, packages=("htop",)), "source-1"))
    assert new_package[0] == base[0]
    assert all(a != b for a, b in zip(new_package[1:], base[1:], strict=True))


def test_stage_image_names(tmp_path: Path) -> None:
    plan = plan_build(request(tmp_path), "d")
    key = stage_key("", plan.stages[0])
    assert stage_image(plan.stages[0], key) == f"localhost/agentbox-build:base-{key[:16]}"
    assert "stage guest-init" in "\n".join(plan.describe())
