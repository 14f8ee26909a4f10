import shlex
from pathlib import Path

from agentbox_cli.container.plan import ContainerRequest, HostFacts, plan_container

HOST = HostFacts(uid=1000, gid=1000, home=Path("/home/u"), cwd=Path("/src/app"),
                 stdin_tty=True, stdout_tty=True)  # fmt: skip
REQ = ContainerRequest(
    image="localhost/agentbox:latest", workspace_key="app-0123456789ab", slug="app",
    hostname="app-agentbox", task_name="app-00112233aabbccdd", state_dir=Path("/s/ws"),
    sccache=Path("/s/sccache"), command=(), root=False, debug=False, grace=120,
)  # fmt: skip


def test_interactive_task() -> None:
    assert plan_container(REQ, HOST).task.argv() == [
        "podman", "run", "--rm", "--interactive", "--tty", "--name", "app-00112233aabbccdd",
        "--userns", "keep-id", "--user", "0:0", "--hostname", "app-agentbox",
        "--workdir", "/workspace", "--label", "agentbox.role=task",
        "--label", "agentbox.workspace=app-0123456789ab",
        "--label", "agentbox.sidecar=agentbox-nix-app-0123456789ab",
        "--env", "AGENTBOX_HOST_UID=1000", "--env", "AGENTBOX_HOST_GID=1000",
        "--env", "NIX_REMOTE=unix:///nix/var/nix/daemon-socket/socket",
        "--env", "SCCACHE_DIR=/home/dev/.cache/sccache",
        "--volume", "/src/app:/workspace", "--volume", "/s/ws/nix/merged:/nix:ro",
        "--volume", "/home/u/.codex:/home/dev/.codex", "--volume", "/home/u/.pi:/home/dev/.pi",
        "--volume", "/s/ws/cargo:/home/dev/.cargo",
        "--volume", "/s/sccache:/home/dev/.cache/sccache",
        "--tmpfs", "/tmp:rw,exec,mode=1777", "localhost/agentbox:latest",
    ]  # fmt: skip


def test_sidecar_and_overlay() -> None:
    plan = plan_container(REQ, HOST)
    assert plan.sidecar.run.argv() == [
        "podman", "run", "--detach", "--name", "agentbox-nix-app-0123456789ab",
        "--entrypoint", "/usr/libexec/agentbox/nix-sidecar",
        "--label", "agentbox.role=nix-sidecar", "--label", "agentbox.workspace=app-0123456789ab",
        "--volume", "/s/ws/nix/merged:/nix", "localhost/agentbox:latest",
    ]  # fmt: skip
    assert plan.sidecar.userns == ("podman", "unshare")
    assert 'fuse-overlayfs -o "lowerdir=$m/nix,upperdir=/s/ws/nix/upper,' in (
        plan.sidecar.mount_script()
    )
    assert plan.host_dirs == (Path("/home/u/.codex"), Path("/home/u/.pi"), Path("/s/ws/cargo"),
                              Path("/s/sccache"))  # fmt: skip


def test_command_without_a_terminal_root_and_debug() -> None:
    import dataclasses

    host = dataclasses.replace(HOST, stdin_tty=False, stdout_tty=False)
    req = dataclasses.replace(REQ, command=("make", "test"), root=True, debug=True)
    task = plan_container(req, host).task
    assert (task.interactive, task.tty, task.command) == (True, False, ("make", "test"))
    assert ("AGENTBOX_ENTER_AS_ROOT", "1") in task.env
    assert task.argv()[:3] == ["podman", "--log-level=debug", "run"]
    on_tty = plan_container(dataclasses.replace(REQ, command=("true",)), HOST).task
    assert (on_tty.interactive, on_tty.tty) == (False, True)


def test_root_host_runs_the_sandbox_as_root() -> None:
    import dataclasses

    plan = plan_container(REQ, dataclasses.replace(HOST, uid=0, gid=0))
    assert plan.task.userns is None
    assert plan.sidecar.userns == ()
    assert ("AGENTBOX_ENTER_AS_ROOT", "1") in plan.task.env
    assert not [k for k, _ in plan.task.env if k.startswith("AGENTBOX_HOST_")]


D = "--log-level=debug"


def test_debug_and_profile_reach_every_podman_call_and_the_guest() -> None:
    import dataclasses

    plan = plan_container(dataclasses.replace(REQ, debug=True, profile=True), HOST)
    assert plan.task.argv() == [
        "podman", D, "run", "--rm", "--interactive", "--tty", "--name", "app-00112233aabbccdd",
        "--userns", "keep-id", "--user", "0:0", "--hostname", "app-agentbox",
        "--workdir", "/workspace", "--label", "agentbox.role=task",
        "--label", "agentbox.workspace=app-0123456789ab",
        "--label", "agentbox.sidecar=agentbox-nix-app-0123456789ab",
        "--env", "AGENTBOX_HOST_UID=1000", "--env", "AGENTBOX_HOST_GID=1000",
        "--env", "NIX_REMOTE=unix:///nix/var/nix/daemon-socket/socket",
        "--env", "SCCACHE_DIR=/home/dev/.cache/sccache",
        "--env", "AGENTBOX_GUEST_PROFILE=1", "--env", "AGENTBOX_GUEST_DEBUG=1",
        "--volume", "/src/app:/workspace", "--volume", "/s/ws/nix/merged:/nix:ro",
        "--volume", "/home/u/.codex:/home/dev/.codex", "--volume", "/home/u/.pi:/home/dev/.pi",
        "--volume", "/s/ws/cargo:/home/dev/.cargo",
        "--volume", "/s/sccache:/home/dev/.cache/sccache",
        "--tmpfs", "/tmp:rw,exec,mode=1777", "localhost/agentbox:latest",
    ]  # fmt: skip
    sidecar = plan.sidecar
    assert sidecar.run.argv() == [
        "podman", D, "run", "--detach", "--name", "agentbox-nix-app-0123456789ab",
        "--entrypoint", "/usr/libexec/agentbox/nix-sidecar",
        "--label", "agentbox.role=nix-sidecar", "--label", "agentbox.workspace=app-0123456789ab",
        "--volume", "/s/ws/nix/merged:/nix", "localhost/agentbox:latest",
    ]  # fmt: skip
    assert sidecar.userns == ("podman", D, "unshare")
    assert sidecar.mount_script("sha256:abc") == (
        f"set -eu; m=$(podman {D} image mount sha256:abc); "
        'missing=""; { [ -e "$m"/nix ] || [ -L "$m"/nix ] ; } || missing="$missing /nix"; '
        '{ [ -e "$m"/usr/bin/agentbox-guest-init ] || [ -L "$m"/usr/bin/agentbox-guest-init ] '
        '|| [ -e "$m"/bin/agentbox-guest-init ] || [ -L "$m"/bin/agentbox-guest-init ] ; } '
        '|| missing="$missing /usr/bin/agentbox-guest-init"; '
        '{ [ -e "$m"/usr/libexec/agentbox/nix-sidecar ] '
        '|| [ -L "$m"/usr/libexec/agentbox/nix-sidecar ] ; } '
        '|| missing="$missing /usr/libexec/agentbox/nix-sidecar"; '
        f'if [ -n "$missing" ]; then podman {D} image unmount sha256:abc >/dev/null 2>&1 '
        '|| true; echo "missing:$missing"; exit 42; fi; '
        "mkdir -p /s/ws/nix/upper/var/nix/daemon-socket /s/ws/nix/work /s/ws/nix/merged; "
        "rm -f /s/ws/nix/upper/var/nix/daemon-socket/socket; "
        'fuse-overlayfs -o "lowerdir=$m/nix,upperdir=/s/ws/nix/upper,workdir=/s/ws/nix/work" '
        "/s/ws/nix/merged"
    )
    assert sidecar.unmount_script() == (
        "if grep -qs ' /s/ws/nix/merged ' /proc/self/mountinfo; then "
        "fusermount3 -u /s/ws/nix/merged 2>/dev/null || fusermount -u /s/ws/nix/merged "
        "2>/dev/null || umount /s/ws/nix/merged 2>/dev/null || umount -l /s/ws/nix/merged; fi; "
        f"podman {D} image unmount localhost/agentbox:latest >/dev/null 2>&1 || true"
    )
    assert sidecar.unmount_script("sha256:abc").endswith(
        f"podman {D} image unmount sha256:abc >/dev/null 2>&1 || true"
    )
    assert plan.describe()[2] == (
        f"  podman {D} unshare sh -c {shlex.quote(sidecar.mount_script())}"
        " (unless its overlay is mounted still)"
    )


def test_root_in_a_rootless_sandbox_is_the_host_user() -> None:
    """--root: no keep-id (whose root is an unmapped sub-uid on the host), so rootless
    Podman's default mapping makes the sandbox's root the user; dev's ids are not passed."""
    import dataclasses

    task = plan_container(dataclasses.replace(REQ, root=True), HOST).task
    argv = task.argv()
    assert "--userns" not in argv
    assert argv[argv.index("--user") : argv.index("--user") + 2] == ["--user", "0:0"]
    assert [f"{k}={v}" for k, v in task.env] == [
        "NIX_REMOTE=unix:///nix/var/nix/daemon-socket/socket",
        "SCCACHE_DIR=/home/dev/.cache/sccache", "AGENTBOX_ENTER_AS_ROOT=1",
    ]  # fmt: skip
    assert plan_container(REQ, HOST).task.userns == "keep-id"  # dev, without --root


def test_a_task_started_alongside_its_sidecar_waits_for_the_daemon_on_first_use() -> None:
    plan = plan_container(REQ, HOST)
    assert plan.task_for(daemon_starting=False) == plan.task
    starting = plan.task_for(daemon_starting=True)
    assert starting.env == (*plan.task.env, ("AGENTBOX_NIX_DAEMON_STARTING", "1"))
    assert plan.sidecar.socket == Path("/s/ws/nix/merged/var/nix/daemon-socket/socket")
    assert plan.sidecar.run_argv("sha256:abc") == [
        "podman", "run", "--detach", "--name", "agentbox-nix-app-0123456789ab",
        "--entrypoint", "/usr/libexec/agentbox/nix-sidecar",
        "--label", "agentbox.role=nix-sidecar", "--label", "agentbox.workspace=app-0123456789ab",
        "--volume", "/s/ws/nix/merged:/nix",
        "--conmon-pidfile", "/s/ws/nix-sidecar.conmon-pid", "sha256:abc",
    ]  # fmt: skip
    assert plan.describe() == [
        "sidecar agentbox-nix-app-0123456789ab (reused when running on the same image ID; "
        "removed 120 s after the last task, its overlay 1800 s after it)",
        "  podman image inspect localhost/agentbox:latest (its ID; pulled when missing)",
        f"  podman unshare sh -c {shlex.quote(plan.sidecar.mount_script())} (unless its "
        "overlay is mounted still)",
        f"  {shlex.join(plan.sidecar.run_argv(REQ.image))} (the image by its ID, beside the "
        "task once it has run 0.5 s; none for a task that ended sooner)",
        "mkdir -p /home/u/.codex", "mkdir -p /home/u/.pi", "mkdir -p /s/ws/cargo",
        "mkdir -p /s/sccache",
        "network: open (the host's network, as Podman gives it)",
        "task app-00112233aabbccdd (its first use of Nix waits for a starting daemon)",
        f"  {shlex.join(starting.argv())}",
    ]  # fmt: skip


def test_profile_alone_or_debug_alone_sets_only_its_own_variable() -> None:
    import dataclasses

    def guest_vars(*, profile: bool, debug: bool) -> list[str]:
        req = dataclasses.replace(REQ, profile=profile, debug=debug)
        env = plan_container(req, HOST).task.env
        return [f"{k}={v}" for k, v in env if k.startswith("AGENTBOX_GUEST_")]

    assert guest_vars(profile=False, debug=False) == []
    assert guest_vars(profile=True, debug=False) == ["AGENTBOX_GUEST_PROFILE=1"]
    assert guest_vars(profile=False, debug=True) == ["AGENTBOX_GUEST_DEBUG=1"]
    plain = plan_container(REQ, HOST)
    assert plain.sidecar.mount_script().startswith(
        "set -eu; m=$(podman image mount localhost/agentbox:latest); "
    )
    assert plain.sidecar.unmount_script().endswith(
        "podman image unmount localhost/agentbox:latest >/dev/null 2>&1 || true"
    )


def test_an_agents_git_mounts_follow_its_worktree_at_workspace() -> None:
    """git-worktree(1): the worktree's ``.git`` file names ``<repo>/.git/worktrees/<id>`` by its
    absolute path, so --agent adds the repository's git dir at that path (read-only) and,
    writable, what a commit writes; they come right after /workspace."""
    import dataclasses

    from agentbox_podman.podman import Mount

    git = (Mount(Path("/src/app/.git"), "/src/app/.git", readonly=True),
           Mount(Path("/src/app/.git/objects"), "/src/app/.git/objects"))  # fmt: skip
    host = dataclasses.replace(HOST, cwd=Path("/s/ws-agent-a1/worktree"))
    task = plan_container(dataclasses.replace(REQ, agent_mounts=git), host).task
    volumes = [v for k, v in zip(task.argv(), task.argv()[1:], strict=False) if k == "--volume"]
    assert volumes[:4] == [
        "/s/ws-agent-a1/worktree:/workspace", "/src/app/.git:/src/app/.git:ro",
        "/src/app/.git/objects:/src/app/.git/objects", "/s/ws/nix/merged:/nix:ro",
    ]  # fmt: skip


def test_an_allow_list_cuts_the_task_off_but_for_the_egress_proxy() -> None:
    import dataclasses

    from agentbox_cli.egress.policy import build_policy

    policy = build_policy(configured_mode="allow", allow=["github.com", "*.npmjs.org"])
    plan = plan_container(dataclasses.replace(REQ, network=policy), HOST)
    # podman-run(1): `--network none` gives the container a network namespace with no
    # interface configured but loopback; `--volume SRC:DST` bind-mounts the proxy's socket dir
    proxy = "http://127.0.0.1:3128"
    assert plan.task.argv() == [
        "podman", "run", "--rm", "--interactive", "--tty", "--name", "app-00112233aabbccdd",
        "--userns", "keep-id", "--user", "0:0", "--hostname", "app-agentbox",
        "--workdir", "/workspace", "--network", "none", "--label", "agentbox.role=task",
        "--label", "agentbox.workspace=app-0123456789ab",
        "--label", "agentbox.sidecar=agentbox-nix-app-0123456789ab",
        "--label", "agentbox.egress-log=/s/ws/egress/app-00112233aabbccdd.denied.jsonl",
        "--env", "AGENTBOX_HOST_UID=1000", "--env", "AGENTBOX_HOST_GID=1000",
        "--env", "AGENTBOX_NIX_DAEMON_OFF=1", "--env", "SCCACHE_DIR=/home/dev/.cache/sccache",
        "--env", "AGENTBOX_EGRESS_SOCKET=/run/agentbox/egress/proxy.sock",
        "--env", f"HTTP_PROXY={proxy}", "--env", f"HTTPS_PROXY={proxy}",
        "--env", f"http_proxy={proxy}", "--env", f"https_proxy={proxy}",
        "--env", "NO_PROXY=localhost,127.0.0.1,::1", "--env", "no_proxy=localhost,127.0.0.1,::1",
        "--volume", "/src/app:/workspace", "--volume", "/s/ws/nix/merged:/nix:ro",
        "--volume", "/home/u/.codex:/home/dev/.codex", "--volume", "/home/u/.pi:/home/dev/.pi",
        "--volume", "/s/ws/cargo:/home/dev/.cargo",
        "--volume", "/s/sccache:/home/dev/.cache/sccache",
        "--volume", "/s/ws/egress/app-00112233aabbccdd:/run/agentbox/egress:ro",
        "--tmpfs", "/tmp:rw,exec,mode=1777",
        "--tmpfs", "/nix/var/nix/daemon-socket:ro,mode=755,notmpcopyup",
        "localhost/agentbox:latest",
    ]  # fmt: skip
    assert (plan.egress_dir, plan.denial_log) == (
        Path("/s/ws/egress/app-00112233aabbccdd"),
        Path("/s/ws/egress/app-00112233aabbccdd.denied.jsonl"),
    )
    lines = plan.describe()
    assert lines[lines.index(next(x for x in lines if x.startswith("network:"))) :][:2] == [
        "network: allow github.com, *.npmjs.org (the task has only loopback and no DNS: HTTP(S) "
        "goes through the egress proxy at http://127.0.0.1:3128)",
        "  egress proxy in this process on /s/ws/egress/app-00112233aabbccdd/proxy.sock (seen "
        "at /run/agentbox/egress); denied requests go to "
        "/s/ws/egress/app-00112233aabbccdd.denied.jsonl",
    ]


def test_network_none_has_no_proxy_at_all() -> None:
    import dataclasses

    from agentbox_cli.egress.policy import build_policy

    plan = plan_container(dataclasses.replace(REQ, network=build_policy(mode="none")), HOST)
    argv = plan.task.argv()
    assert argv[argv.index("--network") + 1] == "none"
    assert not [v for k, v in plan.task.env if "PROXY" in k.upper() or k.startswith("AGENTBOX_E")]
    assert (plan.egress_dir, plan.denial_log) == (None, None)
    assert "network: none (the task has only loopback and no DNS)" in plan.describe()
    assert "--network" not in plan_container(REQ, HOST).task.argv()  # open: as before


def test_under_a_policy_the_task_has_no_nix_daemon_unless_the_user_says_so() -> None:
    """The sidecar's daemon fetches with the host's network: under --net none or allow the
    task gets none (not started for it; a running one's socket dir under a tmpfs, podman-run(1)
    `--tmpfs CONTAINER-DIR[:OPTIONS]`), and the guest init's nix wrappers say why. With
    --nix-outside-policy the task has the daemon as under an open network."""
    import dataclasses

    from agentbox_cli.egress.policy import build_policy

    none = dataclasses.replace(REQ, network=build_policy(mode="none"))
    plan = plan_container(none, HOST)
    assert plan.nix_daemon is False
    assert ("AGENTBOX_NIX_DAEMON_OFF", "1") in plan.task.env
    assert not [k for k, _ in plan.task.env if k == "NIX_REMOTE"]
    # podman-run(1) --tmpfs: without notmpcopyup the socket under it would be copied in
    assert plan.task.tmpfs == (
        "/tmp:rw,exec,mode=1777",
        "/nix/var/nix/daemon-socket:ro,mode=755,notmpcopyup",
    )
    assert plan.task_for(daemon_starting=True) == plan.task  # nothing to wait for
    lines = plan.describe()
    assert lines[3] == (
        "  (not started for this task: under its network policy the daemon would fetch outside "
        "it; its Nix commands say so, and --nix-outside-policy gives it the daemon)"
    )
    assert lines[-2] == "task app-00112233aabbccdd (no Nix daemon: /nix read-only, the " \
        "daemon's socket hidden)"  # fmt: skip

    outside = plan_container(dataclasses.replace(none, nix_outside_policy=True), HOST)
    assert outside.nix_daemon is True
    assert outside.task.env == plan_container(REQ, HOST).task.env
    assert outside.task.tmpfs == ("/tmp:rw,exec,mode=1777",)
    assert "network: none (the task has only loopback and no DNS; the project's shared Nix " \
        "daemon still fetches for it, outside the policy, as --nix-outside-policy asked)" in \
        outside.describe()  # fmt: skip
