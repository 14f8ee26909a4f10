"""Container mode as a plan (pure): names, paths, the overlay, the sidecar and the task."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

from agentbox_cli.egress import BUNDLE_NAME, CA_NAME, SOCKET_NAME
from agentbox_cli.egress.policy import OPEN, NetworkPolicy
from agentbox_guest_init.contract import EGRESS_PROXY_URL as PROXY_URL
from agentbox_podman.podman import (
    EGRESS_LOG_LABEL,
    ROLE_LABEL,
    SIDECAR_LABEL,
    WORKSPACE_LABEL,
    Mount,
    RunSpec,
    image_mount,
    image_unmount,
    unshare,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agentbox_cli.egress.secrets import Secret

NIX_SOCKET = "/nix/var/nix/daemon-socket/socket"
SIDECAR_ENTRYPOINT = "/usr/libexec/agentbox/nix-sidecar"
GUEST_INIT = "/usr/bin/agentbox-guest-init"
DEFAULT_GRACE = 120
# After the sidecar's idle grace its container goes, but the overlay stays mounted until this
# long after the last task (at least the grace itself), so the next cold start runs no `podman
# unshare`; a grace of 0 keeps nothing.
OVERLAY_IDLE_SECONDS = 1800


def overlay_grace(grace: int) -> int:
    """How long after the last task the overlay stays mounted (pure)."""
    return 0 if grace == 0 else max(grace, OVERLAY_IDLE_SECONDS)


# A new sidecar container starts once the task has run this long, so that it does not compete
# with the task's own start; a task that ends sooner starts none (its overlay stays mounted).
SIDECAR_DEFER_SECONDS = 0.5
# Under a network policy the task has no interface but loopback (podman-run(1) `--network
# none`); with an allow-list the egress proxy's socket dir is mounted here, and the guest
# init relays PROXY_URL to it. Hosts that no proxy variable should send through the proxy:
EGRESS_DIR = "/run/agentbox/egress"
NO_PROXY = "localhost,127.0.0.1,::1"
# the CA bundle variables of OpenSSL, Python's requests, curl and git (gnutls): with secrets
TRUST_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO")
# the task's first use of Nix waits for the daemon the sidecar is still starting (guest init)
DAEMON_STARTING_ENV = ("AGENTBOX_NIX_DAEMON_STARTING", "1")
# no daemon at all (an enforced policy): the guest init's nix wrappers say why
DAEMON_OFF_ENV = ("AGENTBOX_NIX_DAEMON_OFF", "1")
# a tmpfs over it hides a running daemon's socket from a task that has none; podman-run(1)
# --tmpfs: notmpcopyup, else Podman copies what is under it (the socket) into the tmpfs
SOCKET_DIR = NIX_SOCKET.rsplit("/", 1)[0]
HIDDEN_SOCKET_DIR = f"{SOCKET_DIR}:ro,mode=755,notmpcopyup"
# the mount script's exit status when the image lacks what container mode needs
CONTRACT_EXIT = 42
# what container mode needs inside the image, checked on its mount (a path, its alternatives)
IMAGE_NEEDS = (("/nix",), (GUEST_INIT, "/bin/agentbox-guest-init"), (SIDECAR_ENTRYPOINT,))


@dataclass(frozen=True, slots=True, kw_only=True)
class HostFacts:
    uid: int
    gid: int
    home: Path
    cwd: Path
    stdin_tty: bool
    stdout_tty: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerRequest:
    image: str
    workspace_key: str
    slug: str
    hostname: str
    task_name: str
    state_dir: Path  # the workspace's own dir
    sccache: Path
    command: tuple[str, ...]
    root: bool
    debug: bool  # podman --log-level=debug everywhere; the guest init's AGENTBOX_GUEST_DEBUG
    grace: int
    profile: bool = False  # AGENTBOX_GUEST_PROFILE: with debug, the guest init's own report
    # --agent: the repository's git dir at its host path, for the worktree at /workspace
    # (agentbox_cli.agents.worktree.GitMounts)
    agent_mounts: tuple[Mount, ...] = ()
    network: NetworkPolicy = OPEN  # [network] and --net/--allow
    secrets: tuple[Secret, ...] = ()  # --secret: placeholders inside, values in the proxy
    ca_dir: Path | None = None  # the per-user CA of the proxy (with secrets)
    # under an enforced policy the task gets no Nix daemon (it fetches with the host's
    # network) unless this says so (--nix-outside-policy, [network] nix_outside_policy)
    nix_outside_policy: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SidecarPlan:
    name: str
    image: str
    upper: Path
    work: Path
    merged: Path
    state_file: Path
    userns: tuple[str, ...]  # `podman unshare` when rootless: where the overlay lives
    run: RunSpec
    debug: bool = False  # every podman command, also those in the scripts

    def mount_script(self, ref: str | None = None) -> str:
        """Mount the image ``ref`` (its ID; the tag by default), check that it has what
        container mode needs (else print ``missing: PATH ...``, unmount it and exit
        ``CONTRACT_EXIT``), remove the last daemon's stale socket from the upper layer, then
        mount the overlay of its /nix; prints nothing on success."""
        q = shlex.quote
        ref = ref or self.image
        checks = "".join(
            "{ " + " || ".join(f'[ -e "$m"{q(p)} ] || [ -L "$m"{q(p)} ]' for p in alts)
            + f' ; }} || missing="$missing {alts[0]}"; '
            for alts in IMAGE_NEEDS
        )  # fmt: skip
        return (
            f"set -eu; m=$({shlex.join(image_mount(ref, debug=self.debug))}); "
            f'missing=""; {checks}if [ -n "$missing" ]; then '
            f"{shlex.join(image_unmount(ref, debug=self.debug))} >/dev/null 2>&1 || true; "
            f'echo "missing:$missing"; exit {CONTRACT_EXIT}; fi; '
            # the socket's dir made in the upper layer: a task without a daemon mounts a tmpfs
            # there, on the read-only /nix (see SOCKET_DIR)
            f"mkdir -p {q(os.fspath(self.upper) + SOCKET_DIR.removeprefix('/nix'))} "
            f"{q(os.fspath(self.work))} {q(os.fspath(self.merged))}; "
            # the last daemon's socket persists in the upper layer: a task started alongside
            # the new sidecar must not take it for the new daemon's (connection refused)
            f"rm -f {q(os.fspath(self.upper) + NIX_SOCKET.removeprefix('/nix'))}; "
            f'fuse-overlayfs -o "lowerdir=$m/nix,upperdir={os.fspath(self.upper)},'
            f'workdir={os.fspath(self.work)}" {q(os.fspath(self.merged))}'
        )

    def unmount_script(self, ref: str | None = None) -> str:
        """Unmount the overlay and the image ``ref`` it was made from (the tag by default)."""
        m = shlex.quote(os.fspath(self.merged))
        return (
            f"if grep -qs ' {os.fspath(self.merged)} ' /proc/self/mountinfo; then "
            f"fusermount3 -u {m} 2>/dev/null || fusermount -u {m} 2>/dev/null || umount {m} "
            f"2>/dev/null || umount -l {m}; fi; "
            f"{shlex.join(image_unmount(ref or self.image, debug=self.debug))} >/dev/null 2>&1 "
            "|| true"
        )

    def run_argv(self, ref: str) -> list[str]:
        """``podman run`` of the sidecar from the image ``ref`` (its ID), writing conmon's pid
        to ``conmon_pidfile`` (so no ``podman container inspect`` is needed after it)."""
        argv = replace(self.run, image=ref).argv()
        return [*argv[:-1], "--conmon-pidfile", os.fspath(self.conmon_pidfile), argv[-1]]

    @property
    def conmon_pidfile(self) -> Path:
        return self.state_file.with_name("nix-sidecar.conmon-pid")

    @property
    def socket(self) -> Path:
        """The daemon's socket on the host (rootless: inside ``podman unshare``)."""
        return self.merged / NIX_SOCKET.removeprefix("/nix/")


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerPlan:
    sidecar: SidecarPlan
    task: RunSpec
    host_dirs: tuple[Path, ...]  # created when missing
    grace: int
    network: NetworkPolicy = OPEN
    # with an allow-list: the dir of the egress proxy's socket (made for the task, removed
    # after it) and the log of the requests the policy denied (kept)
    egress_dir: Path | None = None
    denial_log: Path | None = None
    secrets: tuple[Secret, ...] = ()
    # with secrets: the CA, and the task's private dir of the certificates made from it
    ca_dir: Path | None = None
    tls_dir: Path | None = None
    # False under an enforced policy (unless the user said otherwise): the sidecar is not
    # started for this task, and its socket, were it running for another, is hidden
    nix_daemon: bool = True

    def task_for(self, *, daemon_starting: bool) -> RunSpec:
        """The task; started alongside a starting sidecar, its first use of Nix waits for
        the daemon's socket (the guest init's nix wrappers)."""
        if not daemon_starting or not self.nix_daemon:
            return self.task
        return replace(self.task, env=(*self.task.env, DAEMON_STARTING_ENV))

    def describe(self) -> list[str]:
        s = self.sidecar
        prefix = shlex.join(s.userns) + " " if s.userns else ""
        starting = self.task_for(daemon_starting=True)
        return [
            f"sidecar {s.name} (reused when running on the same image ID; removed {self.grace} "
            f"s after the last task, its overlay {overlay_grace(self.grace)} s after it)",
            f"  podman image inspect {s.image} (its ID; pulled when missing)",
            f"  {prefix}sh -c {shlex.quote(s.mount_script())} (unless its overlay is mounted "
            "still)",
            *([f"  {shlex.join(s.run_argv(s.image))} (the image by its ID, beside the task "
               f"once it has run {SIDECAR_DEFER_SECONDS} s; none for a task that ended sooner)"]
              if self.nix_daemon else
              ["  (not started for this task: under its network policy the daemon would fetch "
               "outside it; its Nix commands say so, and --nix-outside-policy gives it the "
               "daemon)"]),
            *(f"mkdir -p {d}" for d in self.host_dirs),
            *self._network_lines(),
            f"task {self.task.name}"
            + (" (its first use of Nix waits for a starting daemon)" if self.nix_daemon else
               " (no Nix daemon: /nix read-only, the daemon's socket hidden)"),
            f"  {shlex.join(starting.argv())}",
        ]  # fmt: skip

    def _network_lines(self) -> list[str]:
        policy = self.network
        if not policy.enforced:
            return ["network: open (the host's network, as Podman gives it)"]
        daemon = ("; the project's shared Nix daemon still fetches for it, outside the policy, "
                  "as --nix-outside-policy asked" if self.nix_daemon else "")  # fmt: skip
        if self.egress_dir is None:
            return [f"network: none (the task has only loopback and no DNS{daemon})"]
        return [
            f"network: allow {', '.join(policy.allow) or '(no host)'} (the task has only "
            f"loopback and no DNS: HTTP(S) goes through the egress proxy at {PROXY_URL}{daemon})",
            f"  egress proxy in this process on {self.egress_dir / SOCKET_NAME} (seen at "
            f"{EGRESS_DIR}); denied requests go to {self.denial_log}",
            *(f"  secret {s.name} for {', '.join(s.hosts)}: a placeholder inside; the proxy puts "
              f"the value of ${s.name} into their requests' credential headers, terminating "
              f"their TLS with the CA in {self.ca_dir} (trusted inside through "
              f"{EGRESS_DIR}/{BUNDLE_NAME})"
              for s in self.secrets),
        ]  # fmt: skip


def sidecar_name(workspace_key: str) -> str:
    return f"agentbox-nix-{workspace_key}"


def plan_sidecar(
    image: str, workspace_key: str, state_dir: Path, *, rootless: bool, debug: bool
) -> SidecarPlan:
    nix = state_dir / "nix"
    name = sidecar_name(workspace_key)
    run = RunSpec(
        image=image,
        name=name,
        detach=True,
        remove=False,
        entrypoint=SIDECAR_ENTRYPOINT,
        labels=((ROLE_LABEL, "nix-sidecar"), (WORKSPACE_LABEL, workspace_key)),
        mounts=(Mount(nix / "merged", "/nix"),),
        debug=debug,
    )
    return SidecarPlan(
        name=name, image=image, upper=nix / "upper", work=nix / "work",
        merged=nix / "merged", state_file=state_dir / "nix-sidecar.state",
        userns=tuple(unshare(debug=debug)) if rootless else (), run=run, debug=debug,
    )  # fmt: skip


def plan_container(req: ContainerRequest, host: HostFacts) -> ContainerPlan:
    rootless = host.uid != 0
    nix = req.state_dir / "nix"
    sidecar = plan_sidecar(req.image, req.workspace_key, req.state_dir, rootless=rootless,
                           debug=req.debug)  # fmt: skip
    name = sidecar.name
    labels_common = ((WORKSPACE_LABEL, req.workspace_key),)
    cargo = req.state_dir / "cargo"
    mounts = (
        Mount(host.cwd, "/workspace"),
        *req.agent_mounts,
        Mount(nix / "merged", "/nix", readonly=True),
        Mount(host.home / ".codex", "/home/dev/.codex"),
        Mount(host.home / ".pi", "/home/dev/.pi"),
        Mount(cargo, "/home/dev/.cargo"),
        Mount(req.sccache, "/home/dev/.cache/sccache"),
    )
    # root on the host is root in the sandbox: dev cannot have uid 0. With --root, rootless
    # Podman's default mapping (no keep-id) makes the sandbox's root the host user, so what
    # root writes into the project is the user's; under keep-id it would be a sub-uid.
    keep_id = rootless and not req.root
    ids = [("AGENTBOX_HOST_UID", str(host.uid)), ("AGENTBOX_HOST_GID", str(host.gid))]
    policy = req.network
    nix_daemon = not policy.enforced or req.nix_outside_policy
    env = [
        *(ids if keep_id else []),
        ("NIX_REMOTE", f"unix://{NIX_SOCKET}") if nix_daemon else DAEMON_OFF_ENV,
        ("SCCACHE_DIR", "/home/dev/.cache/sccache"),
    ]
    if req.root or not rootless:
        env.append(("AGENTBOX_ENTER_AS_ROOT", "1"))
    # as in libkrun mode: the guest init prints its own profile report when both are set
    if req.profile:
        env.append(("AGENTBOX_GUEST_PROFILE", "1"))
    if req.debug:
        env.append(("AGENTBOX_GUEST_DEBUG", "1"))
    egress_dir, denial_log = None, None
    egress = req.state_dir / "egress"  # per task: the socket dir, the denial log, certificates
    if policy.mode == "allow":
        egress_dir = egress / req.task_name
        denial_log = egress / f"{req.task_name}.denied.jsonl"
        mounts = (*mounts, Mount(egress_dir, EGRESS_DIR, readonly=True))  # a socket connects
        env.append(("AGENTBOX_EGRESS_SOCKET", f"{EGRESS_DIR}/{SOCKET_NAME}"))
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.append((var, PROXY_URL))
        env += [("NO_PROXY", NO_PROXY), ("no_proxy", NO_PROXY)]
        env += [(s.name, s.placeholder) for s in req.secrets]
        if req.secrets:  # the proxy answers for their hosts with certificates of its own CA
            bundle = f"{EGRESS_DIR}/{BUNDLE_NAME}"
            env += [(var, bundle) for var in TRUST_VARS]
            env.append(("NODE_EXTRA_CA_CERTS", f"{EGRESS_DIR}/{CA_NAME}"))
    interactive_shell = not req.command
    task = RunSpec(
        image=req.image,
        name=req.task_name,
        command=req.command,
        interactive=interactive_shell or not host.stdin_tty,
        tty=host.stdin_tty and host.stdout_tty,
        userns="keep-id" if keep_id else None,
        user="0:0",
        hostname=req.hostname,
        workdir="/workspace",
        network="none" if policy.enforced else None,
        labels=(
            (ROLE_LABEL, "task"),
            *labels_common,
            (SIDECAR_LABEL, name),
            *(((EGRESS_LOG_LABEL, os.fspath(denial_log)),) if denial_log else ()),
        ),
        env=tuple(env),
        mounts=mounts,
        tmpfs=("/tmp:rw,exec,mode=1777", *(() if nix_daemon else (HIDDEN_SOCKET_DIR,))),
        debug=req.debug,
    )
    host_dirs = (host.home / ".codex", host.home / ".pi", cargo, req.sccache)
    tls_dir = egress / f"{req.task_name}.tls" if req.secrets else None
    return ContainerPlan(sidecar=sidecar, task=task, host_dirs=host_dirs, grace=req.grace,
                         network=policy, egress_dir=egress_dir, denial_log=denial_log,
                         secrets=req.secrets, ca_dir=req.ca_dir if req.secrets else None,
                         tls_dir=tls_dir, nix_daemon=nix_daemon)  # fmt: skip
