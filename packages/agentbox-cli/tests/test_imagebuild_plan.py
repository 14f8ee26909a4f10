from pathlib import Path

import pytest

from agentbox_cli.imagebuild import assets
from agentbox_cli.imagebuild.plan import (
    DEFAULT_PACKAGES,
    TRIXIE_PACKAGES,
    BuildPlan,
    BuildRequest,
    apt_install,
    plan_build,
    stage_image,
    stage_key,
)


def request(tmp_path: Path, **changes: object) -> BuildRequest:
    """A Debian 12 build unless ``suite`` says otherwise (the smaller plan reads more easily)."""
    fields: dict[str, object] = {
        "suite": "bookworm",
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


def test_the_default_build_is_the_workstation(tmp_path: Path) -> None:
    default = BuildRequest(cache_dir=tmp_path / "cache", guest_init_src=tmp_path / "src",
                           guest_init_version="0.1.0")  # fmt: skip
    assert default.suite == "trixie"
    assert plan_build(default, "d") == trixie(tmp_path)


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


def trixie(tmp_path: Path, **changes: object) -> BuildPlan:
    return plan_build(request(tmp_path, suite="trixie", **changes), "d")


def test_bookworm_is_unchanged_by_the_workstation(tmp_path: Path) -> None:
    plan = plan_build(request(tmp_path), "d")
    assert plan.stages[1].runs[0][2].count(" rustc ") == 0
    env = dict(plan.stages[-1].config.env)  # type: ignore[union-attr]
    assert list(env) == ["LANG", "NODE_EXTRA_CA_CERTS", "PIP_CERT", "REQUESTS_CA_BUNDLE"]


def test_trixie_stages_packages_and_env(tmp_path: Path) -> None:
    plan = trixie(tmp_path, packages=("htop",), npm=("typescript",))
    assert [s.name for s in plan.stages] == [
        "base", "packages", "host-ca", "npm", "pip", "workstation", "guest-init", "finish",
    ]  # fmt: skip
    assert plan.base_tar == tmp_path / "cache" / "debootstrap-trixie-minbase.tar"
    assert plan.debootstrap == ("debootstrap", "--variant=minbase", "trixie", "<dir>",
                                "http://deb.debian.org/debian")  # fmt: skip
    assert plan.stages[1].runs == (apt_install((*TRIXIE_PACKAGES, "htop")),)
    assert plan.stages[3].runs[0][-5:] == (
        "@openai/codex", "@mariozechner/pi-coding-agent", "oh-my-codex", "reasonix", "typescript",
    )  # fmt: skip
    assert plan.stages[4].runs == ((
        "env", "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
        "PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
        "REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
        "python3", "-m", "pip", "install", "--break-system-packages", "--no-cache-dir",
        "--root-user-action=ignore", "--disable-pip-version-check", "--quiet",
        "tree-sitter==0.25.*", "tree-sitter-rust==0.24.*",
    ),)  # fmt: skip
    assert plan.stages[3].optional is not None
    assert plan.stages[4].optional is not None
    assert [(f.path, f.mode) for f in plan.stages[5].files] == [
        ("/etc/tmux.conf", 0o644),
        ("/etc/fish/conf.d/agentbox-starship.fish", 0o644),
        ("/usr/local/bin/clang_mold_wrapper", 0o755),
        ("/usr/local/bin/agentbox-nix-store-db-check", 0o755),
    ]
    config = plan.stages[-1].config
    assert config is not None
    assert config.env == (
        ("LANG", "C.UTF-8"),
        ("NODE_EXTRA_CA_CERTS", "/etc/ssl/certs/ca-certificates.crt"),
        ("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"),
        ("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"),
        ("RUSTC_WRAPPER", "/usr/bin/sccache"),
        ("CMAKE_C_COMPILER_LAUNCHER", "/usr/bin/sccache"),
        ("CMAKE_CXX_COMPILER_LAUNCHER", "/usr/bin/sccache"),
        ("SCCACHE_DIR", "/home/dev/.cache/sccache"),
        ("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER", "/usr/local/bin/clang_mold_wrapper"),
        ("LIBCLANG_PATH", "/usr/lib/llvm-19/lib"),
    )
    assert "RUSTFLAGS" not in dict(config.env)
    assert dict(config.labels)["agentbox.build.suite"] == "trixie"


def test_trixie_has_the_workstation_toolset(tmp_path: Path) -> None:
    wanted = {"rustc", "cargo", "rust-clippy", "rustfmt", "rust-analyzer", "rust-src", "sccache",
              "mold", "clang", "musl-tools", "build-essential", "fish", "starship", "nix-bin",
              "podman", "python3-yaml", "python-is-python3", "nodejs", "curl", "jq", "git",
              "ripgrep", "fd-find", "tmux", "bubblewrap", "libpython3.13"}  # fmt: skip
    assert wanted <= set(TRIXIE_PACKAGES)
    assert "libpython3.11" not in TRIXIE_PACKAGES


def test_dry_run_lists_every_package_and_source(tmp_path: Path) -> None:
    text = "\n".join(trixie(tmp_path).describe())
    for name in (*TRIXIE_PACKAGES, "@openai/codex", "reasonix", "tree-sitter-rust==0.24.*"):
        assert name in text
    assert [line for line in text.splitlines() if line.startswith("source ")] == [
        "source debian http://deb.debian.org/debian trixie (debootstrap base and every apt "
        "package)",
        "source npm https://registry.npmjs.org/ (optional stage npm)",
        "source pypi https://pypi.org/simple/ (pyinstaller for the guest-init stage, optional "
        "stage pip)",
    ]


def test_trixie_guest_init_change_rebuilds_only_guest_init_and_finish(tmp_path: Path) -> None:
    one = keys(plan_build(request(tmp_path, suite="trixie"), "source-1"))
    two = keys(plan_build(request(tmp_path, suite="trixie"), "source-2"))
    assert [a == b for a, b in zip(one, two, strict=True)] == [True] * 6 + [False] * 2
    assert keys(plan_build(request(tmp_path), "source-1"))[0] != one[0]  # another base


def test_unknown_suite(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="suite 'sid' is not one of"):
        plan_build(request(tmp_path, suite="sid"), "d")


def test_store_db_check_and_tmux_settings() -> None:
    assert assets.TMUX_CONF.splitlines()[1:] == [
        "set -g mouse off", "bind | split-window -h", "bind - split-window -v",
        "bind h select-pane -L", "bind j select-pane -D", "bind k select-pane -U",
        "bind l select-pane -R",
    ]  # fmt: skip
    assert assets.CLANG_MOLD_WRAPPER.splitlines()[-1] == 'exec /usr/bin/clang -fuse-ld=mold "$@"'
    compile(assets.NIX_STORE_DB_CHECK, "agentbox-nix-store-db-check", "exec")


def fake_tool(bin_dir: Path, name: str, script: str) -> None:
    tool = bin_dir / name
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)


@pytest.mark.parametrize("with_upper", [False, True], ids=["plain", "libkrun-upper"])
def test_store_db_check_reports_present_but_invalid_paths(tmp_path: Path, with_upper: bool
                                                          ) -> None:  # fmt: skip
    import subprocess
    import sys

    store, bin_dir, upper = tmp_path / "store", tmp_path / "bin", tmp_path / "upper"
    for name in ("aaaa-good", "bbbb-bad", ".links", "cccc-good.lock"):
        (store / name).mkdir(parents=True)
    bin_dir.mkdir()
    fake_tool(bin_dir, "nix", f'echo "{store}/aaaa-good"')
    fake_tool(bin_dir, "nix-store", "echo \"path '$2' was modified!\" >&2; exit 1")
    if with_upper:
        (upper / "store" / "bbbb-bad").mkdir(parents=True)
        (upper / "var/nix/db").mkdir(parents=True)
    script = tmp_path / "check"
    script.write_text(assets.NIX_STORE_DB_CHECK)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=False,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "NIX_STORE_DIR": str(store),
             "AGENTBOX_NIX_DISK_UPPER": str(upper)},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    expected = [
        "2 store paths present, 1 valid in the Nix database, 1 present but invalid",
        f"invalid: {store}/bbbb-bad",
        f"  nix-store --verify-path: exit status 1: path '{store}/bbbb-bad' was modified!",
    ]
    if with_upper:
        expected += [
            f"  store layer: present in {upper}/store (evidence, not proof of the cause)",
            f"context: {upper}/var/nix exists (metadata shadow)",
            f"context: {upper}/var/nix/db exists (metadata shadow)",
        ]
    assert done.stdout.splitlines() == expected
    assert sorted(p.name for p in store.iterdir()) == [
        ".links",
        "aaaa-good",
        "bbbb-bad",
        "cccc-good.lock",
    ]  # fmt: skip  (nothing repaired or removed)


def test_the_verb_dry_run_and_an_unknown_suite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentbox_cli.main import main

    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert main(["--dry-run", "image", "build", "--suite", "trixie", "--tag", "x/y:z"], env) == 0
    out = capsys.readouterr().out.splitlines()
    base = tmp_path / "cache/agentbox/debootstrap-trixie-minbase.tar"
    assert out[:2] == ["image x/y:z", f"base {base} (from debootstrap)"]
    assert "stage workstation (inputs " in "\n".join(out)
    assert main(["image", "build", "--suite", "sid"], env) == 1
    assert capsys.readouterr().err.splitlines() == [
        "agentbox: --suite sid is not a Debian release this build knows",
        "hint: use one of: bookworm, trixie",
    ]
