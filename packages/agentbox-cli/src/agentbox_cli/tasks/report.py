"""What ``agentbox ps`` prints (an aligned table, or JSON described by ``schema.json``), and
where the VM tasks of each app live (agentbox's state base, and loftd's)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from agentbox_cli.tasks.inventory import Task

SCHEMA_ID = "agentbox-ps/1"
COLUMNS = ("NAME", "MODE", "PROJECT", "IMAGE", "STARTED", "PID/ID", "HOLDS")
NONE = "no agentbox task is running"


def age(started: float | None, now: float) -> str:
    """``3m ago``: seconds under a minute, minutes under an hour, hours under a day, days."""
    if started is None:
        return "-"
    seconds = max(0, int(now - started))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _holds(task: Task) -> str:
    return ", ".join(f"{kind} {what}" for kind, what in task.holds) or "-"


def row(task: Task, now: float) -> tuple[str, ...]:
    ident = task.container_id[:12] if task.container_id else str(task.pid or "-")
    return (task.name, task.mode, task.project or "-", task.image or "-", age(task.started, now),
            ident, _holds(task))  # fmt: skip


def render_text(tasks: Sequence[Task], now: float) -> str:
    if not tasks:
        return NONE
    rows = [COLUMNS, *(row(t, now) for t in tasks)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
        for r in rows
    )


def render_json(tasks: Sequence[Task]) -> str:
    return json.dumps({"schema": SCHEMA_ID, "tasks": [t.document() for t in tasks]}, indent=2)


def loftd_base(environ: Mapping[str, str]) -> Path:
    """loftd's state base: ``[state].location/loftd`` from loftd.toml, else
    ``$XDG_STATE_HOME/loftd`` (read here, not through loftd's app, which agentbox does not
    import); a loftd.toml that cannot be read gives the default (loftd itself says why)."""
    from agentbox_state.config import ConfigFile
    from agentbox_state.paths import StatePaths, config_file_path

    path = config_file_path("loftd", environ)
    values: dict[str, object] = {}
    try:
        import tomllib

        with open(path, "rb") as f:
            location = tomllib.load(f).get("state", {}).get("location")
        if isinstance(location, str) and os.path.isabs(location):
            values["state.location"] = location
    except (OSError, ValueError, AttributeError):
        pass
    config = ConfigFile(path=path, exists=bool(values), values=values)
    return StatePaths.resolve("loftd", environ, config).base
