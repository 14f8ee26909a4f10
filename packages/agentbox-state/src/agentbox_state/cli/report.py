"""Text and JSON rendering of the ``paths`` and ``config`` reports both command lines print.

The reports are plain dicts here, for the text form on the start-up path; their JSON form and
schemas are the records of ``agentbox_state.reports``, loaded only for ``--json``.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from agentbox_state.cli.flags import Setting
    from agentbox_state.paths import StatePaths
    from agentbox_state.workspace import Workspace


def paths_report(paths: StatePaths, workspace: Workspace) -> dict[str, object]:
    return {
        "state_base": os.fspath(paths.base),
        "state_base_source": paths.base_source,
        "config_file": os.fspath(paths.config_file),
        "workspace": workspace.path,
        "workspace_slug": workspace.slug,
        "workspace_state_dir": os.fspath(paths.layout(workspace).state_dir),
        "sccache_dir": os.fspath(paths.sccache),
        "image_cache_dir": os.fspath(paths.images),
    }


def config_report(
    config_file: str, exists: bool, settings: Mapping[str, Setting]
) -> dict[str, object]:
    return {
        "config_file": config_file,
        "config_file_exists": exists,
        "settings": {key: {"value": s.value, "source": s.source} for key, s in settings.items()},
    }


def _text_value(value: object) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def render(kind: str, report: Mapping[str, object], *, as_json: bool) -> str:
    """The ``kind`` report (``paths`` or ``config``) as JSON (stable key order, for scripts) or
    as aligned ``key: value`` lines (for people)."""
    if as_json:
        from agentbox_state.reports import to_json  # dataclasses-json: only for --json

        return to_json(kind, report)
    lines: list[str] = []
    scalars = {k: v for k, v in report.items() if not isinstance(v, dict)}
    width = max((len(k) for k in scalars), default=0)
    lines += [f"{k + ':':<{width + 1}} {_text_value(v)}" for k, v in scalars.items()]
    for key, value in report.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            inner = max((len(str(k)) for k in value), default=0)
            for name, entry in value.items():
                if isinstance(entry, dict) and set(entry) == {"value", "source"}:
                    shown = f"{_text_value(entry['value'])}  [{entry['source']}]"
                else:
                    shown = _text_value(entry)
                lines.append(f"  {str(name) + ':':<{inner + 1}} {shown}")
    return "\n".join(lines)
