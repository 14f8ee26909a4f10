"""An agent's first state forked from the project's: which items, the copy-on-write copies'
command lines (coreutils cp(1) ``--reflink=always`` fails rather than copy in full; the /nix
upper copied in the user namespace that wrote it), and the refusals that leave it empty."""

from __future__ import annotations

from pathlib import Path

from agentbox_cli.agents.fork import fork, persistent_items
from agentbox_state.testing import RecordingRunner


def project(tmp_path: Path) -> Path:
    state = tmp_path / "ws"
    (state / "nix/upper/store").mkdir(parents=True)
    (state / "nix/work").mkdir()
    (state / "cargo").mkdir()
    (state / "locks").mkdir()
    for name in ("microvm-nix.raw", "libkrun-nix.raw", "microvm-nix.raw.lease"):
        (state / name).write_bytes(b"")
    return state


def test_the_items_are_the_disks_the_upper_and_the_cargo_dir(tmp_path: Path) -> None:
    assert persistent_items(project(tmp_path)) == [
        "libkrun-nix.raw", "microvm-nix.raw", "nix/upper", "cargo",
    ]  # fmt: skip
    assert persistent_items(tmp_path / "missing") == []


def test_each_item_is_reflinked_the_upper_in_the_user_namespace(tmp_path: Path) -> None:
    state, agent = project(tmp_path), tmp_path / "ws-agent-a1"
    rec = RecordingRunner()
    said: list[str] = []
    done = fork(state, agent, rec, userns=("podman", "unshare"), busy=(), say=said.append)
    assert done == ["libkrun-nix.raw (reflink)", "microvm-nix.raw (reflink)",
                    "nix/upper (reflink)", "cargo (reflink)"]  # fmt: skip
    copies = [a for a in rec.argvs if "--no-target-directory" in a and ".reflink-probe" not in
              " ".join(a)]  # fmt: skip
    cp = ["cp", "-a", "--reflink=always", "--no-target-directory"]
    assert copies == [
        [*cp, f"{state}/libkrun-nix.raw", f"{agent}/libkrun-nix.raw"],
        [*cp, f"{state}/microvm-nix.raw", f"{agent}/microvm-nix.raw"],
        ["podman", "unshare", *cp, f"{state}/nix/upper", f"{agent}/nix/upper"],
        [*cp, f"{state}/cargo", f"{agent}/cargo"],
    ]
    assert said == []


def test_in_use_it_starts_empty_and_says_why(tmp_path: Path) -> None:
    state, agent = project(tmp_path), tmp_path / "ws-agent-a1"
    said: list[str] = []
    rec = RecordingRunner()
    assert fork(state, agent, rec, userns=(), busy=("task t1 runs",), say=said.append) == []
    assert said == ["agentbox: the agent's state starts empty: the project's is in use "
                    "(task t1 runs)"]  # fmt: skip
    assert (rec.argvs, agent.exists()) == ([], False)


def test_without_reflink_it_starts_empty_and_copies_nothing(tmp_path: Path) -> None:
    state, agent = project(tmp_path), tmp_path / "ws-agent-a1"
    rec = RecordingRunner()
    rec.script("cp", "-a", "--reflink=always", returncode=1, stderr="Operation not supported")
    said: list[str] = []
    assert fork(state, agent, rec, userns=(), busy=(), say=said.append) == []
    assert said == [f"agentbox: the agent's state starts empty: {state} cannot share blocks "
                    "(reflink), and a full copy is not made"]  # fmt: skip
    assert not agent.exists()
    assert sorted(p.name for p in state.iterdir()) == [
        "cargo",
        "libkrun-nix.raw",
        "locks",
        "microvm-nix.raw",
        "microvm-nix.raw.lease",
        "nix",
    ]  # the probe files are gone


def test_an_existing_agent_state_is_never_forked_over(tmp_path: Path) -> None:
    state, agent = project(tmp_path), tmp_path / "ws-agent-a1"
    agent.mkdir()
    rec = RecordingRunner()
    assert fork(state, agent, rec, userns=(), busy=(), say=print) == []
    assert rec.argvs == []
