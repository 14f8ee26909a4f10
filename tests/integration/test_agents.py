"""``agentbox --agent NAME container`` for real, as the ordinary test user: four agents of one
git project run at once, each commits in its own worktree from inside its sandbox, the user's
checkout is untouched and the host's branches ``agentbox/NAME`` hold the commits.

git-worktree(1): the worktree's ``.git`` file names ``<repo>/.git/worktrees/<id>`` by its
absolute host path, so the sandbox sees the repository's git dir there (read-only, with its
objects, the agents' refs and reflogs and this worktree's admin dir writable).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.podman, pytest.mark.image]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import UserBox

AGENTS = ("a1", "a2", "a3", "a4")


def git(box: UserBox, *args: str) -> str:
    argv = ["runuser", "-u", box.user, "--", *box.env(), "git", "-C", str(box.project), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True, cwd="/tmp").stdout


def reap(box: UserBox, name: str) -> None:
    state = box.state_dir.with_name(f"{box.key}-agent-{name}")
    box.run("internal", "sidecar-reap", "--", str(state), "localhost/agentbox:latest", "0")


def init_repo(b: UserBox) -> None:
    git(b, "init", "--quiet", "--initial-branch=main")
    git(b, "config", "user.email", "test@example.org")
    git(b, "config", "user.name", "Test")
    (b.project / "README").write_text("hello\n")
    subprocess.run(["chown", f"{b.pw.pw_uid}:{b.pw.pw_gid}", str(b.project / "README")],
                   check=True)  # fmt: skip
    git(b, "add", "README")
    git(b, "commit", "--quiet", "-m", "first")


@pytest.fixture
def repo_box(user_image: str, user_box: Callable[..., UserBox]) -> Iterator[UserBox]:
    b = user_box()
    init_repo(b)
    yield b
    for name in AGENTS:
        reap(b, name)


def test_four_agents_commit_at_once_in_their_own_worktrees(repo_box: UserBox) -> None:
    box = repo_box
    head = git(box, "rev-parse", "HEAD")
    started = []
    for n, name in enumerate(AGENTS, 1):
        script = f"echo {n} > f; git add f; git commit --quiet -m {n}; git status --porcelain"
        argv = box.argv("--agent", name, "container", "--", "sh", "-c", script,
                        AGENTBOX_SIDECAR_IDLE_GRACE="0")  # fmt: skip
        started.append((time.monotonic(), subprocess.Popen(
            argv, cwd=box.project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL)))  # fmt: skip
    results = []
    for begun, proc in started:
        out, err = proc.communicate(timeout=600)
        results.append((proc.returncode, out, err, time.monotonic() - begun))
    for code, out, err, _ in results:
        assert (code, out) == (0, ""), err  # committed, and the worktree is clean after
    # the user's checkout: untouched
    assert git(box, "status", "--porcelain") == ""
    assert git(box, "rev-parse", "HEAD") == head
    assert not (box.project / "f").exists()
    for n, name in enumerate(AGENTS, 1):
        assert git(box, "log", "--format=%s", f"agentbox/{name}") == f"{n}\nfirst\n"
        assert git(box, "show", f"agentbox/{name}:f") == f"{n}\n"
        assert git(box, "rev-parse", f"agentbox/{name}~1") == head
    worktrees = git(box, "worktree", "list", "--porcelain")
    assert sorted(line.removeprefix("branch refs/heads/") for line in worktrees.splitlines()
                  if line.startswith("branch ")) == ["agentbox/a1", "agentbox/a2", "agentbox/a3",
                                                     "agentbox/a4", "main"]  # fmt: skip
    print("agent run seconds:", [round(r[3], 2) for r in results])


def test_an_agent_sees_its_own_worktree_and_cannot_write_the_users_refs(
    repo_box: UserBox,
) -> None:
    box = repo_box
    script = (
        "cat README; git rev-parse --abbrev-ref HEAD; "
        f"touch {box.project}/.git/refs/heads/main 2>/dev/null && echo wrote || echo ro"
    )
    done = box.run("--agent", "a1", "container", "--", "sh", "-c", script,
                   AGENTBOX_SIDECAR_IDLE_GRACE="0")  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "hello\nagentbox/a1\nro\n"), done.stderr
    # a second run reuses the worktree and the branch
    again = box.run("--agent", "a1", "container", "--", "git", "log", "--format=%s",
                    AGENTBOX_SIDECAR_IDLE_GRACE="0")  # fmt: skip
    assert (again.returncode, again.stdout) == (0, "first\n"), again.stderr


def test_a_bad_agent_name_is_refused_and_changes_nothing(repo_box: UserBox) -> None:
    done = repo_box.run("--agent", "../x", "container", "--", "true")
    assert done.returncode == 2
    assert "--agent '../x' is not an agent name" in done.stderr
    assert git(repo_box, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_agents_lists_a_running_agent_and_remove_takes_its_worktree_and_state(
    repo_box: UserBox,
) -> None:
    import json

    from agentbox_testing.schemas import load_schema, problems

    box = repo_box
    state = box.state_dir.with_name(f"{box.key}-agent-a1")
    script = "echo x > dirty; touch started; sleep 8"
    argv = box.argv("--agent", "a1", "container", "--", "sh", "-c", script,
                    AGENTBOX_SIDECAR_IDLE_GRACE="0")  # fmt: skip
    with subprocess.Popen(argv, cwd=box.project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, stdin=subprocess.DEVNULL) as proc:  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (state / "worktree/started").exists():
            time.sleep(0.2)
        listed = box.run("agents", "--json")
        refused = box.run("agents", "remove", "a1", "--force")
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    doc = json.loads(listed.stdout)
    assert problems(doc, load_schema("agentbox_cli.agents")) == []
    assert [(a["name"], a["branch"], a["worktree"], a["running"]) for a in doc["agents"]] == [
        ("a1", "agentbox/a1", str(state / "worktree"), True)
    ]
    assert refused.returncode == 1
    assert "refusing to remove agent a1 while it runs" in refused.stderr
    idle = json.loads(box.run("agents", "--json").stdout)["agents"]
    assert [a["running"] for a in idle] == [False]
    dirty = box.run("agents", "remove", "a1")
    assert dirty.returncode == 1
    assert "uncommitted change(s)" in dirty.stderr
    assert (state / "worktree/dirty").exists()
    removed = box.run("agents", "remove", "a1", "--force")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.endswith("; branch agentbox/a1 kept\n")
    assert not state.exists()  # its /nix upper too (written in the user namespace)
    assert git(box, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(box, "rev-parse", "agentbox/a1") == git(box, "rev-parse", "HEAD")


@pytest.mark.btrfs
def test_fork_reflinks_the_projects_items_on_btrfs(tmp_path: Path) -> None:
    """The real cp(1) ``--reflink=always`` on a loop btrfs: the agent's copies share the
    project's blocks (btrfs filesystem du's "Exclusive" is 0) and are its own after a write."""
    from agentbox_cli.agents.fork import fork
    from agentbox_state.runner import SubprocessRunner
    from agentbox_testing import btrfs_loop

    with btrfs_loop(tmp_path / "s.img", tmp_path / "s", size="1G") as mnt:
        project = mnt / "workspaces/p-0123456789ab"
        (project / "nix/upper/store").mkdir(parents=True)
        (project / "nix/upper/store/x").write_bytes(b"n" * 1_000_000)
        (project / "cargo").mkdir()
        (project / "cargo/marker").write_text("kept\n")
        with open(project / "microvm-nix.raw", "wb") as f:
            f.truncate(2**30)
            f.write(b"d" * 1_000_000)
        agent = mnt / "workspaces/p-0123456789ab-agent-a1"
        runner = SubprocessRunner({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        said: list[str] = []
        done = fork(project, agent, runner, userns=(), busy=(), say=said.append)
        assert done == ["microvm-nix.raw (reflink)", "nix/upper (reflink)", "cargo (reflink)"]
        assert said == []
        assert (agent / "microvm-nix.raw").stat().st_size == 2**30
        du = subprocess.run(["btrfs", "filesystem", "du", "--raw", "-s", str(agent)],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
        total, exclusive = du.splitlines()[1].split()[:2]
        assert (int(total) >= 2_000_000, int(exclusive)) == (True, 0), du
        from agentbox_storage.extents import shared_bytes

        os.sync()
        assert shared_bytes(agent) >= 2_000_000  # what `agentbox agents` shows as SHARED
        (agent / "cargo/marker").write_text("agent\n")
        assert (project / "cargo/marker").read_text() == "kept\n"
        assert (agent / "nix/upper/store/x").read_bytes() == b"n" * 1_000_000


def test_without_reflink_a_new_agent_starts_empty_and_says_why(repo_box: UserBox) -> None:
    """The test user's state is on ext4 here (cp(1) --reflink=always fails): the project's
    cargo dir is not copied in full, the agent starts empty and runs."""
    from agentbox_testing import require

    box = repo_box
    fs = subprocess.run(["stat", "-f", "-c", "%T", box.pw.pw_dir], capture_output=True,
                        text=True, check=True).stdout.strip()  # fmt: skip
    require(fs.startswith("ext"), f"the test user's home is on {fs}, not ext4")
    mine = box.run("container", "--", "sh", "-c", "echo kept > /home/dev/.cargo/marker",
                   AGENTBOX_SIDECAR_IDLE_GRACE="0")  # fmt: skip
    try:
        assert mine.returncode == 0, mine.stderr
        agent = box.run("--agent", "a1", "container", "--", "sh", "-c",
                        "cat /home/dev/.cargo/marker 2>/dev/null || echo empty",
                        AGENTBOX_SIDECAR_IDLE_GRACE="0")  # fmt: skip
        assert (agent.returncode, agent.stdout) == (0, "empty\n"), agent.stderr
        assert f"agentbox: the agent's state starts empty: {box.state_dir} cannot share " \
            "blocks (reflink), and a full copy is not made" in agent.stderr  # fmt: skip
    finally:
        box.run("internal", "sidecar-reap", "--", str(box.state_dir),
                "localhost/agentbox:latest", "0")  # fmt: skip


@pytest.mark.btrfs
def test_a_rootless_agent_forks_the_projects_nix_upper_on_btrfs(
    user_image: str, user_box: Callable[..., UserBox]
) -> None:
    """The state on a loop btrfs, as the test user: what the project's /nix upper holds (it
    is written in the user namespace, so it is copied there, by reflink) is in the agent's
    /nix on its first run, and the agent's later writes stay its own."""
    import tempfile

    from agentbox_testing import btrfs_loop

    with (
        tempfile.TemporaryDirectory(prefix="agentbox-agents-") as tmp,
        btrfs_loop(Path(tmp) / "s.img", Path(tmp) / "s", size="2G") as mnt,
    ):
        os.chmod(tmp, 0o755)
        box = user_box(XDG_STATE_HOME=str(mnt))
        os.chown(mnt, box.pw.pw_uid, box.pw.pw_gid)
        init_repo(box)
        # rootless Podman's pause process holds the mount namespace its containers start in:
        # one started before this mount would not see it
        box.podman("system", "migrate")
        try:
            first = box.run("container", "--", "true")
            assert first.returncode == 0, first.stderr
            marker = box.state_dir / "nix/upper/marker"
            box.podman("unshare", "sh", "-c", f"echo from-the-project > {marker}")
            agent = box.run("--agent", "a1", "container", "--", "cat", "/nix/marker")
            assert (agent.returncode, agent.stdout) == (0, "from-the-project\n"), agent.stderr
            assert "agent a1 forked the project's nix/upper (reflink)" in agent.stderr
            box.podman("unshare", "sh", "-c", f"echo changed > {marker}")
            again = box.run("--agent", "a1", "container", "--", "cat", "/nix/marker")
            assert (again.returncode, again.stdout) == (0, "from-the-project\n"), again.stderr
        finally:
            box.run("internal", "sidecar-reap", "--", str(box.state_dir),
                    "localhost/agentbox:latest", "0")  # fmt: skip
            reap(box, "a1")
