"""Text and JSON rendering of the ``paths`` and ``config`` reports both command lines print."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from agentbox_state.cli.flags import Setting
from agentbox_state.paths import StatePaths
from agentbox_state.workspace import Workspace


def _plain(value: object) -> object:
    if isinstance(value, Path):
        return os.fspath(value)
    return value


def paths_report(paths: StatePaths, workspace: Workspace) -> dict[str, object]:
    return {
        "state_base": os.fspath(paths.base),
        "state_base_source": paths.base_source,
        "config_file": os.fspath(paths.config_file),
        "workspace": os.fspath(workspace.path),
        "workspace_slug": workspace.slug,
        "workspace_state_dir": os.fspath(paths.workspace_dir(workspace)),
        "sccache_dir": os.fspath(paths.sccache),
        "image_cache_dir": os.fspath(paths.images),
    }


def config_report(
    config_file: Path, exists: bool, settings: Mapping[str, Setting]
) -> dict[str, object]:
    return {
        "config_file": os.fspath(config_file),
        "config_file_exists": exists,
        "settings": {
            key: {"value": _plain(s.value), "source": s.source} for key, s in settings.items()
        },
    }


def _text_value(value: object) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def render(report: Mapping[str, object], *, as_json: bool) -> str:
    """JSON (stable key order, for scripts) or aligned ``key: value`` lines (for people)."""
    if as_json:
        import json

        return json.dumps(report, indent=2)
    lines: list[str] = []
    scalars = {k: v for k, v in report.items() if not isinstance(v, Mapping)}
    width = max((len(k) for k in scalars), default=0)
    lines += [f"{k + ':':<{width + 1}} {_text_value(v)}" for k, v in scalars.items()]
    for key, value in report.items():
        if isinstance(value, Mapping):
            lines.append(f"{key}:")
            inner = max((len(str(k)) for k in value), default=0)
            for name, entry in value.items():
                if isinstance(entry, Mapping) and set(entry) == {"value", "source"}:
                    shown = f"{_text_value(entry['value'])}  [{entry['source']}]"
                else:
                    shown = _text_value(entry)
                lines.append(f"  {str(name) + ':':<{inner + 1}} {shown}")
    return "\n".join(lines)
