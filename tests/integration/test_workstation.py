"""The workstation image (Debian 13, issue 12) checked for real inside `agentbox container`, as the
ordinary test user: Rust with sccache and mold, Nix with flakes, fish + starship, Python with
tree-sitter, tmux, the agent CLIs and the store diagnostic.

The workstation is the default build (`agentbox image build`), so this module uses the image the
session built once and loaded into the test user's storage (the `user_image` fixture).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentbox_cli.imagebuild.plan import DEFAULT_SUITE
from agentbox_testing import require_root

pytestmark = [pytest.mark.root, pytest.mark.podman, pytest.mark.image]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conftest import UserBox

IMAGE = "localhost/agentbox:latest"  # the default build (Debian 13) is the workstation
RunAs = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def workstation(user_image: str) -> str:
    """The workstation image in the test user's storage; returns the user."""
    assert DEFAULT_SUITE == "trixie"
    return user_image


@pytest.fixture
def state_home(workstation: str) -> Iterator[Path]:
    """A fresh state dir for the test user: the shared compiler cache starts empty there."""
    import pwd

    pw = pwd.getpwnam(workstation)
    with tempfile.TemporaryDirectory(prefix="agentbox-ws-state-") as tmp:
        os.chmod(tmp, 0o755)
        state = Path(tmp) / "state"
        state.mkdir()
        os.chown(state, pw.pw_uid, pw.pw_gid)
        yield state


@pytest.fixture
def box(state_home: Path, user_box: Callable[..., UserBox]) -> Iterator[UserBox]:
    b = user_box(XDG_STATE_HOME=str(state_home), AGENTBOX_IMAGE=IMAGE)
    yield b
    b.run("internal", "sidecar-reap", "--", str(b.state_dir), IMAGE, "0")


def inside(box: UserBox, script: str) -> subprocess.CompletedProcess[str]:
    return box.run("container", "--", "sh", "-c", script, AGENTBOX_SIDECAR_IDLE_GRACE="0")


def test_cargo_new_and_build_with_mold_owned_by_the_user(box: UserBox) -> None:
    script = (
        "set -e; rustc --version; cargo new --vcs none --quiet hello; cd hello; "
        "cargo build --quiet; ./target/debug/hello; "
        "readelf -p .comment target/debug/hello | grep -o 'mold [0-9.]*' | head -1"
    )
    done = inside(box, script)
    assert done.returncode == 0, done.stderr + done.stdout
    version, hello, linker = done.stdout.splitlines()
    found = re.match(r"rustc (\d+)\.(\d+)\.", version)
    assert found, version
    assert (int(found[1]), int(found[2])) >= (1, 85)
    assert hello == "Hello, world!"
    assert linker.startswith("mold ")  # through clang_mold_wrapper, no RUSTFLAGS
    for path in (box.project / "hello", box.project / "hello/target/debug/hello"):
        assert (path.stat().st_uid, path.stat().st_gid) == (box.pw.pw_uid, box.pw.pw_gid)


def test_the_compiler_cache_is_shared_across_projects(
    state_home: Path, user_box: Callable[..., UserBox]
) -> None:
    build = (
        "set -e; cargo new --lib --vcs none --quiet probe; cd probe; "
        "cargo build --release --quiet; sccache --show-stats; sccache --stop-server >/dev/null"
    )
    stats = []
    for _ in range(2):  # two projects, one state dir: the same crate at /workspace/probe
        box = user_box(XDG_STATE_HOME=str(state_home), AGENTBOX_IMAGE=IMAGE)
        try:
            done = inside(box, build)
        finally:
            box.run("internal", "sidecar-reap", "--", str(box.state_dir), IMAGE, "0")
        assert done.returncode == 0, done.stderr + done.stdout
        hits = re.search(r"^Cache hits\s+(\d+)", done.stdout, re.MULTILINE)
        assert hits, done.stdout
        stats.append(int(hits[1]))
        box.project.rename(box.project.with_name(f"done-{len(stats)}"))
    assert stats[0] == 0
    assert stats[1] >= 1
    cache = state_home / "agentbox" / "sccache"
    assert any(p.is_file() for p in cache.rglob("*")), f"no cache entries under {cache}"


def test_rust_toolset_and_compilers(box: UserBox) -> None:
    script = (
        "set -e; cargo clippy --version; rustfmt --version; rust-analyzer --version; "
        'test -d "$(rustc --print sysroot)/lib/rustlib/src/rust/library"; '
        "sccache --version; mold --version; clang --version | head -1; gcc --version | head -1; "
        'musl-gcc --version >/dev/null; ls "$LIBCLANG_PATH"/libclang*.so* >/dev/null; '
        'echo "$RUSTC_WRAPPER $CMAKE_C_COMPILER_LAUNCHER $CMAKE_CXX_COMPILER_LAUNCHER"; '
        'echo "$SCCACHE_DIR $CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER ${RUSTFLAGS-unset}"'
    )
    done = inside(box, script)
    assert done.returncode == 0, done.stderr + done.stdout
    lines = done.stdout.splitlines()
    assert lines[-2:] == [
        "/usr/bin/sccache /usr/bin/sccache /usr/bin/sccache",
        "/home/dev/.cache/sccache /usr/local/bin/clang_mold_wrapper unset",
    ]
    assert any(line.startswith("sccache 0.") for line in lines), lines


def test_nix_with_flakes_and_a_store_path_that_persists(box: UserBox) -> None:
    first = inside(box, "set -e; nix --version; nix eval --expr '1 + 1'; "
                        "echo hi > /tmp/x; nix store add-file /tmp/x")  # fmt: skip
    assert first.returncode == 0, first.stderr
    version, two, path = first.stdout.splitlines()
    found = re.match(r"nix \(Nix\) (\d+)\.(\d+)", version)
    assert found, version
    assert (int(found[1]), int(found[2])) >= (2, 26)
    assert two == "2"
    # A task started beside a starting sidecar can find the socket before the daemon accepts on
    # it (container mode's wait checks that the socket exists): wait until it answers.
    ready = (
        "i=0; until nix store ping >/dev/null 2>&1 || [ $i -ge 50 ]; do i=$((i+1)); sleep 0.2; done"
    )
    again = inside(
        box, f"{ready}; nix path-info {path} && cat {path} && agentbox-nix-store-db-check"
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[:2] == [path, "hi"]
    assert again.stdout.splitlines()[2].endswith(", 0 present but invalid")


def test_fish_starship_python_tmux_and_the_agent_clis(box: UserBox) -> None:
    script = (
        "set -e; fish -i -c 'functions fish_prompt' | grep -c 'starship prompt'; "
        "starship --version | head -1; /bin/python --version; /bin/python3 --version; "
        "python3 -c 'import yaml, tree_sitter, tree_sitter_rust as r; "
        "p = tree_sitter.Parser(tree_sitter.Language(r.language())); "
        'print(p.parse(b"fn main() {}").root_node.type)\'; '
        "tmux -V; tmux -L t new-session -d 'sleep 30'; tmux -L t show -gv mouse; "
        "for k in '|' - h j k l; do tmux -L t list-keys -T prefix -- \"$k\"; done; "
        "tmux -L t kill-server; for c in codex pi omx reasonix; do command -v $c; done; "
        "codex --version; for c in curl jq git rg fd bwrap node docker docker-compose podman "
        "agentbox-guest-init loftd-guest-init; do command -v $c >/dev/null; done; "
        "/usr/bin/env bash -c 'echo env-bash'"
    )
    done = inside(box, script)
    assert done.returncode == 0, done.stderr + done.stdout
    lines = done.stdout.splitlines()
    assert lines[0] == "1"
    assert lines[1].startswith("starship 1.")
    assert lines[2].startswith("Python 3.")
    assert lines[3].startswith("Python 3.")
    assert lines[4] == "source_file"
    assert lines[5].startswith("tmux 3.")
    assert lines[6] == "off"
    assert [line.split()[3:] for line in lines[7:13]] == [
        ["|", "split-window", "-h"], ["-", "split-window", "-v"], ["h", "select-pane", "-L"],
        ["j", "select-pane", "-D"], ["k", "select-pane", "-U"], ["l", "select-pane", "-R"],
    ]  # fmt: skip
    assert [Path(p).name for p in lines[13:17]] == ["codex", "pi", "omx", "reasonix"]
    assert lines[-1] == "env-bash"


def test_store_db_check_reports_an_invalid_path(workstation: str, run_as: RunAs) -> None:
    script = (
        "mkdir /nix/store/0000000000000000000000000000000a-not-registered; "
        "agentbox-nix-store-db-check; echo status $?"
    )
    done = run_as(workstation, "podman", "run", "--rm", "--entrypoint=sh", IMAGE, "-c", script)
    lines = done.stdout.splitlines()
    assert lines[0] == "1 store paths present, 0 valid in the Nix database, 1 present but invalid"
    assert lines[1] == "invalid: /nix/store/0000000000000000000000000000000a-not-registered"
    assert lines[2].startswith("  nix-store --verify-path: exit status ")
    assert lines[-1] == "status 1"


def test_image_labels(workstation: str, run_as: RunAs) -> None:
    done = run_as(workstation, "podman", "image", "inspect", "--format",
                  '{{index .Labels "agentbox.build.suite"}}', IMAGE)  # fmt: skip
    assert done.stdout == "trixie\n", done.stderr


LIB_SH = Path(__file__).resolve().parents[2] / "scripts" / "lib.sh"


@pytest.fixture
def fresh_user() -> Iterator[str]:
    """A new account, as a new user of agentbox has: no containers config, no Podman storage."""
    import pwd
    import secrets

    require_root("creates a user account")
    name = f"agentbox-new-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    try:
        yield name
    finally:
        uid = pwd.getpwnam(name).pw_uid
        # Podman's pause process of that user's rootless namespace, by pid
        pids = subprocess.run(["pgrep", "-U", str(uid)], capture_output=True, text=True).stdout
        for pid in pids.split():
            subprocess.run(["kill", pid], check=False)
        for _ in range(50):
            if subprocess.run(["pgrep", "-U", str(uid)], capture_output=True).returncode:
                break
            subprocess.run(["sleep", "0.1"], check=False)
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


def storage_setup(user: str, run_as: RunAs, then: str = "") -> subprocess.CompletedProcess[str]:
    """scripts/install's storage step, from a copy of scripts/lib.sh the user can read."""
    with tempfile.TemporaryDirectory(prefix="agentbox-lib-") as tmp:
        os.chmod(tmp, 0o755)
        lib = Path(tmp) / "lib.sh"
        lib.write_text(LIB_SH.read_text())
        lib.chmod(0o644)
        return run_as(user, "bash", "-c", f'. "{lib}"; rootless_overlay_storage; {then}')


def test_install_gives_a_new_user_overlay_storage(fresh_user: str, run_as: RunAs) -> None:
    done = storage_setup(fresh_user, run_as,
                         "podman info --format '{{.Store.GraphDriverName}}'")  # fmt: skip
    assert done.returncode == 0, done.stderr
    conf = Path(f"/home/{fresh_user}/.config/containers/storage.conf")
    assert conf.read_text() == '[storage]\ndriver = "overlay"\n'
    assert done.stdout == "overlay\n"
    assert f'wrote driver = "overlay" to {conf}' in done.stderr
    # now the user has storage: a second run changes nothing and says nothing of it
    again = storage_setup(fresh_user, run_as)
    assert (again.returncode, again.stderr) == (0, "")


def test_install_never_changes_existing_storage(fresh_user: str, run_as: RunAs) -> None:
    driver = ["podman", "info", "--format", "{{.Store.GraphDriverName}}"]
    made = run_as(fresh_user, *driver)  # storage made before agentbox came (vfs here)
    assert made.returncode == 0, made.stderr
    done = storage_setup(fresh_user, run_as, "podman info --format '{{.Store.GraphDriverName}}'")
    assert done.returncode == 0, done.stderr
    assert not Path(f"/home/{fresh_user}/.config/containers/storage.conf").exists()
    assert done.stdout == made.stdout
    assert "wrote" not in done.stderr


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_install_makes_the_base_the_build_wants(agentbox: Path, tmp_path: Path, suite: str) -> None:
    env = {
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PATH": "/usr/bin:/bin",
    }

    def plan() -> str:
        dry = subprocess.run([str(agentbox), "--dry-run", "image", "build", "--suite", suite],
                             env=env, capture_output=True, text=True, check=True)  # fmt: skip
        done = subprocess.run(["bash", "-c", f'. "{LIB_SH}"; debootstrap_plan "$1"', "-",
                               dry.stdout], capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout

    base = tmp_path / "cache" / "agentbox" / f"debootstrap-{suite}-minbase.tar"
    assert plan() == f"{suite} http://deb.debian.org/debian {base}\n"
    base.parent.mkdir(parents=True)
    base.write_bytes(b"")
    assert plan() == ""  # cached: nothing to make
