"""The agents of a project: found by their state dirs (``workspaces/<project key>-agent-NAME``),
reported (pure, from facts) and rendered."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agentbox_cli.agents.worktree import BRANCH_PREFIX, KEY_INFIX

SCHEMA = "agentbox-agents/2"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentFact:
    name: str
    state_dir: Path
    worktree: Path | None  # None: outside git (or the worktree is gone)
    allocated: int  # bytes of the whole state dir, worktree included
    shared: int  # of those, in blocks other files use too (forked from the project's)
    running: tuple[str, ...]  # why it is in use (its held leases), empty when idle


def agent_dirs(workspaces: Path, project_key: str) -> list[tuple[str, Path]]:
    """(name, state dir) of each agent of the project keyed ``project_key``, by name."""
    prefix = project_key + KEY_INFIX
    try:
        names = sorted(os.listdir(workspaces))
    except OSError:
        return []
    return [(n.removeprefix(prefix), workspaces / n) for n in names
            if n.startswith(prefix) and (workspaces / n).is_dir()]  # fmt: skip


def report(project: str, facts: list[AgentFact]) -> dict[str, object]:
    """``agentbox agents --json`` (schema.json beside this module)."""
    return {
        "schema": SCHEMA,
        "project": project,
        "agents": [
            {
                "name": f.name,
                "branch": BRANCH_PREFIX + f.name if f.worktree is not None else None,
                "worktree": os.fspath(f.worktree) if f.worktree is not None else None,
                "state_dir": os.fspath(f.state_dir),
                "allocated_bytes": f.allocated,
                "shared_bytes": min(f.shared, f.allocated),
                "running": bool(f.running),
            }
            for f in facts
        ],
    }


def render(doc: dict[str, object]) -> str:
    from agentbox_state.parse import human_size as human

    agents = doc["agents"]
    assert isinstance(agents, list)
    if not agents:
        return f"no agents of {doc['project']} (start one: agentbox --agent NAME container)"
    rows = [("NAME", "BRANCH", "STATE", "SHARED", "RUNNING", "WORKTREE")]
    for a in agents:
        running = "yes" if a["running"] else "no"
        rows.append((a["name"], a["branch"] or "-", human(a["allocated_bytes"]),
                     human(a["shared_bytes"]), running,
                     a["worktree"] or "(project dir)"))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
        for r in rows
    )
