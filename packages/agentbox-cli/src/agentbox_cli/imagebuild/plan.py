"""The image build as a plan (pure): stages keyed by their inputs, so a rebuild with unchanged
inputs reuses every stage image and finishes in seconds."""

from __future__ import annotations

import hashlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from agentbox_cli.imagebuild import assets

DEFAULT_TAG = "localhost/agentbox:latest"
DEFAULT_SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
STAGE_REPO = "localhost/agentbox-build"
KEY_LABEL = "agentbox.build.stage-key"

DEFAULT_PACKAGES = (
    "ca-certificates", "sudo", "less", "procps", "iproute2", "util-linux", "socat",
    "fish", "git", "curl", "jq", "tmux", "python3", "nodejs", "npm", "build-essential",
    "nix-bin", "podman", "fuse-overlayfs", "uidmap", "passt", "slirp4netns", "docker-compose",
    "btrfs-progs",
    # to freeze the guest init with the image's own Python
    "python3-venv", "libpython3.11", "binutils",
)  # fmt: skip
# Debian 13: the workstation (issue 12). Rust, its cache and linker, clang/musl, the shell and
# its prompt, the search tools, all from Debian's own archive.
TRIXIE_PACKAGES = (
    "ca-certificates", "sudo", "less", "procps", "iproute2", "util-linux", "socat", "file",
    "xz-utils", "unzip", "openssh-client",
    "fish", "starship", "git", "curl", "jq", "tmux", "ripgrep", "fd-find", "bubblewrap",
    "python3", "python3-yaml", "python3-pip", "python-is-python3", "nodejs", "npm",
    "build-essential", "pkg-config", "cmake", "clang", "mold", "musl-tools",
    "rustc", "cargo", "rust-clippy", "rustfmt", "rust-analyzer", "rust-src", "sccache",
    "nix-bin", "podman", "crun", "catatonit", "fuse-overlayfs", "uidmap", "passt",
    "slirp4netns", "docker-compose", "btrfs-progs",
    # to freeze the guest init with the image's own Python
    "python3-venv", "libpython3.13", "binutils",
)  # fmt: skip
SUITE_PACKAGES = {"bookworm": DEFAULT_PACKAGES, "trixie": TRIXIE_PACKAGES}
# What each suite's Debian archive lacks and PyPI has (trixie: the Rust grammar is no package).
SUITE_PIP = {"bookworm": (), "trixie": ("tree-sitter==0.25.*", "tree-sitter-rust==0.24.*")}
DEFAULT_NPM = ("@openai/codex", "@mariozechner/pi-coding-agent")
# The original's other agent CLIs that the npm registry has (trixie's Node.js 20 runs them).
SUITE_NPM = {"bookworm": DEFAULT_NPM, "trixie": (*DEFAULT_NPM, "oh-my-codex", "reasonix")}
NPM_REGISTRY = "https://registry.npmjs.org/"
PYPI = "https://pypi.org/simple/"
SCCACHE = "/usr/bin/sccache"
LLVM_LIB = "/usr/lib/llvm-19/lib"
LINKER_WRAPPER = "/usr/local/bin/clang_mold_wrapper"
# The workstation's compiler settings (trixie). No RUSTFLAGS: a user's cargo config layers on
# top. SCCACHE_DIR is container mode's shared cache mount.
WORKSTATION_ENV = (
    ("RUSTC_WRAPPER", SCCACHE),
    ("CMAKE_C_COMPILER_LAUNCHER", SCCACHE),
    ("CMAKE_CXX_COMPILER_LAUNCHER", SCCACHE),
    ("SCCACHE_DIR", "/home/dev/.cache/sccache"),
    ("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER", LINKER_WRAPPER),
    ("LIBCLANG_PATH", LLVM_LIB),
)
PIP_INSTALL = ("python3", "-m", "pip", "install", "--break-system-packages", "--no-cache-dir",
               "--root-user-action=ignore", "--disable-pip-version-check", "--quiet")  # fmt: skip
ENTRYPOINT = ("/bin/agentbox-guest-init", "default", "enter", "--")
CMD = ("fish", "-l")
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
# Node and pip carry their own CA lists; point them at the system store (which has the host's).
CA_ENV = (("NODE_EXTRA_CA_CERTS", SYSTEM_CA), ("PIP_CERT", SYSTEM_CA),
          ("REQUESTS_CA_BUNDLE", SYSTEM_CA))  # fmt: skip
WITH_CA_ENV = ("env", *(f"{k}={v}" for k, v in CA_ENV))
NPM_INSTALL = ("npm", "install", "--global", "--no-fund", "--no-audit", "--loglevel=error")


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildRequest:
    tag: str = DEFAULT_TAG
    suite: str = DEFAULT_SUITE
    mirror: str = DEFAULT_MIRROR
    base_dir: Path | None = None
    packages: tuple[str, ...] = ()  # extra Debian packages
    npm: tuple[str, ...] = ()  # extra npm packages
    cache_dir: Path
    guest_init_src: Path  # the agentbox_guest_init package directory
    guest_init_version: str
    # The host's own CAs (for TLS-inspecting proxies): trusted in the image too, so that npm
    # and pip work during the build and agents work inside the sandbox.
    host_ca_dir: Path | None = None
    host_ca_digest: str = ""
    debug: bool = False  # buildah --log-level=debug for every command; no part of any stage key


@dataclass(frozen=True, slots=True)
class File:
    path: str  # in the image
    text: str
    mode: int = 0o755


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageConfig:
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    workingdir: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Stage:
    name: str
    inputs: str  # hash of what this stage adds; the stage key chains it with the previous key
    copies: tuple[tuple[Path, str], ...] = ()  # host dir -> path in the image
    files: tuple[File, ...] = ()
    runs: tuple[tuple[str, ...], ...] = ()
    optional: str | None = None  # why a failure may be skipped (with a warning)
    config: ImageConfig | None = None

    def describe(self) -> list[str]:
        lines = [f"stage {self.name} (inputs {self.inputs[:12]})"]
        lines += [f"  copy {src} -> {dst}" for src, dst in self.copies]
        lines += [f"  write {f.path} ({len(f.text)} bytes, mode {f.mode:o})" for f in self.files]
        lines += [f"  run {shlex.join(cmd)}" for cmd in self.runs]
        if self.config:
            lines.append(f"  config {self.config}")
        return lines


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildPlan:
    tag: str
    base_tar: Path
    base_from: str  # "cache", "base-dir", or "debootstrap"
    debootstrap: tuple[str, ...]
    stages: tuple[Stage, ...]
    debug: bool = False  # buildah --log-level=debug for every command
    sources: tuple[str, ...] = ()  # where packages come from (printed, no part of any key)

    def describe(self) -> list[str]:
        lines = [f"image {self.tag}", f"base {self.base_tar} (from {self.base_from})"]
        lines += [f"source {s}" for s in self.sources]
        if self.base_from == "debootstrap":
            lines.append(f"  run {shlex.join(self.debootstrap)}")
        for stage in self.stages:
            lines += stage.describe()
        return lines


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def tree_digest(root: Path) -> str:
    """Content hash of a source tree (paths and bytes; caches and bytecode ignored)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            h.update(os.fspath(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def stage_key(previous: str, stage: Stage) -> str:
    """What a stage is: its predecessor, its inputs and everything it does (commands included),
    so changing how a stage works rebuilds it."""
    return digest(previous, stage.name, stage.inputs, *stage.describe())


def stage_image(stage: Stage, key: str) -> str:
    return f"{STAGE_REPO}:{stage.name}-{key[:16]}"


def apt_install(packages: tuple[str, ...]) -> tuple[str, ...]:
    script = (
        "set -eu; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; "
        "apt-get install -y -qq --no-install-recommends " + shlex.join(packages) + " >/dev/null; "
        "apt-get clean; rm -rf /var/lib/apt/lists/*"
    )
    return ("sh", "-c", script)


def _workstation_stages(suite: str) -> tuple[Stage, ...]:
    """Trixie only: what PyPI adds (optional: the registry may be unreachable) and the
    workstation's own files (tmux, fish's prompt, the linker wrapper, Nix's settings, the store
    diagnostic)."""
    if suite != "trixie":
        return ()
    pip = SUITE_PIP[suite]
    files = tuple(File(path, text, mode) for path, text, mode in assets.WORKSTATION_FILES)
    return (
        Stage(
            name="pip",
            inputs=digest(*pip),
            runs=(WITH_CA_ENV + PIP_INSTALL + pip,),
            optional=f"PyPI ({PYPI}) may be unreachable; tree-sitter and its Rust grammar "
            "are then missing",
        ),
        Stage(
            name="workstation",
            inputs=digest(
                *(f"{f.path}:{f.mode:o}:{f.text}" for f in files), assets.WORKSTATION_SCRIPT
            ),
            files=files,
            runs=(("sh", "-c", assets.WORKSTATION_SCRIPT),),
        ),
    )


def plan_build(req: BuildRequest, source_digest: str) -> BuildPlan:
    """The plan for ``req``; ``source_digest`` is ``tree_digest`` of the guest init source."""
    if req.suite not in SUITE_PACKAGES:
        raise ValueError(f"suite {req.suite!r} is not one of {tuple(SUITE_PACKAGES)}")
    if req.base_dir is not None:
        base_tar, base_from = req.base_dir, "base-dir"
    else:
        base_tar = req.cache_dir / f"debootstrap-{req.suite}-minbase.tar"
        base_from = "cache" if base_tar.exists() else "debootstrap"
    packages = tuple(dict.fromkeys((*SUITE_PACKAGES[req.suite], *req.packages)))
    npm = tuple(dict.fromkeys((*SUITE_NPM[req.suite], *req.npm)))
    base_identity = (
        f"{req.base_dir}" if req.base_dir else f"debootstrap minbase {req.suite} {req.mirror}"
    )
    env: tuple[tuple[str, str], ...] = (("LANG", "C.UTF-8"), *CA_ENV)
    if req.suite == "trixie":
        env += WORKSTATION_ENV
    stages = (
        Stage(name="base", inputs=digest(base_identity)),
        Stage(name="packages", inputs=digest(*packages), runs=(apt_install(packages),)),
        Stage(
            name="host-ca",
            inputs=digest(req.host_ca_digest),
            copies=((req.host_ca_dir, "/usr/local/share/ca-certificates/agentbox-host"),)
            if req.host_ca_dir
            else (),
            runs=(("update-ca-certificates",),),
        ),
        Stage(
            name="npm",
            inputs=digest(*npm),
            # npm running as root keeps the package authors' uids (seen: 718322462), which a
            # rootless Podman cannot map: give it all to root in the same layer.
            runs=(
                WITH_CA_ENV + NPM_INSTALL + npm,
                ("chown", "-R", "0:0", "/usr/local/lib/node_modules"),
            ),
            optional="the npm registry may be unreachable; the agent CLIs are then missing",
        ),
        *_workstation_stages(req.suite),
        Stage(
            name="guest-init",
            inputs=digest(source_digest, assets.FREEZE_SCRIPT, assets.FREEZE_ENTRY),
            copies=((req.guest_init_src, "/tmp/agentbox-freeze/src/agentbox_guest_init"),),
            files=(File("/tmp/agentbox-freeze/src/entry.py", assets.FREEZE_ENTRY, 0o644),),
            runs=(("sh", "-c", assets.FREEZE_SCRIPT),),
        ),
        Stage(
            name="finish",
            inputs=digest(
                assets.FINISH_SCRIPT,
                assets.NIX_SIDECAR,
                assets.PODMAN_WRAPPER,
                assets.DOCKER_WRAPPER,
                assets.DOCKER_COMPOSE_WRAPPER,
                req.guest_init_version,
                *ENTRYPOINT,
                *CMD,
            ),
            files=(
                File("/usr/libexec/agentbox/nix-sidecar", assets.NIX_SIDECAR),
                File("/usr/local/bin/podman", assets.PODMAN_WRAPPER),
                File("/usr/local/bin/docker", assets.DOCKER_WRAPPER),
                File("/usr/local/bin/docker-compose", assets.DOCKER_COMPOSE_WRAPPER),
            ),
            runs=(("sh", "-c", assets.FINISH_SCRIPT),),
            config=ImageConfig(
                entrypoint=ENTRYPOINT,
                cmd=CMD,
                env=env,
                workingdir="/workspace",
                labels=(
                    ("agentbox.guest-init.version", req.guest_init_version),
                    ("agentbox.build.suite", req.suite),
                    ("agentbox.build.packages", " ".join(packages)),
                    ("agentbox.build.npm", " ".join(npm)),
                ),
            ),
        ),
    )
    debootstrap = ("debootstrap", "--variant=minbase", req.suite, "<dir>", req.mirror)
    sources = (
        f"debian {req.mirror} {req.suite} (debootstrap base and every apt package)",
        f"npm {NPM_REGISTRY} (optional stage npm)",
        f"pypi {PYPI} (pyinstaller for the guest-init stage"
        + (", optional stage pip)" if SUITE_PIP[req.suite] else ")"),
    )
    return BuildPlan(tag=req.tag, base_tar=base_tar, base_from=base_from,
                     debootstrap=debootstrap, stages=stages, debug=req.debug,
                     sources=sources)  # fmt: skip
