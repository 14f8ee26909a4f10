"""The documented ``--json`` outputs of ``paths`` and ``config``, as typed records and schemas.

dataclasses-json gives each report a ``to_json`` and a marshmallow ``schema()`` that scripts
(and our tests) can validate an output against. It costs a few hundred milliseconds to import
here, so only ``--json`` loads this module (``agentbox_state.cli.report`` imports it inside the
function that prints JSON; the import-linter contract keeps it off the start-up modules).
Paths are plain strings here: that is what the reports print, and what a schema can check
without a custom marshmallow field. (Building a ``schema()`` makes dataclasses-json 0.6 warn:
marshmallow 3.26 deprecations in its own code, and ``value``'s open type; printing does not.)
"""

# No `from __future__ import annotations`: dataclasses-json reads the field types at run time.
from collections.abc import Mapping
from dataclasses import dataclass

from dataclasses_json import DataClassJsonMixin


@dataclass(frozen=True, kw_only=True)
class PathsReport(DataClassJsonMixin):
    """``paths --json``: where one project's state lives, and why there."""

    state_base: str
    state_base_source: str
    config_file: str
    workspace: str
    workspace_slug: str
    workspace_state_dir: str
    sccache_dir: str
    image_cache_dir: str


@dataclass(frozen=True, kw_only=True)
class SettingReport(DataClassJsonMixin):
    """One effective setting: its value (any TOML value, or null) and where it came from."""

    value: object | None  # any TOML value; null when unset
    source: str


@dataclass(frozen=True, kw_only=True)
class ConfigReport(DataClassJsonMixin):
    """``config --json``: the config file, and every effective setting by its key."""

    config_file: str
    config_file_exists: bool
    settings: dict[str, SettingReport]


def to_json(kind: str, report: Mapping[str, object]) -> str:
    """The ``kind`` report (``paths`` or ``config``) as JSON, keys in the documented order; a
    report missing a field or carrying an unknown one is a bug here (``TypeError``)."""
    record: DataClassJsonMixin
    if kind == "paths":
        record = PathsReport(**report)  # type: ignore[arg-type]  # the fields say their types
    else:
        fields = dict(report)
        settings = fields.pop("settings")
        assert isinstance(settings, dict)
        record = ConfigReport(
            settings={key: SettingReport(**entry) for key, entry in settings.items()},
            **fields,  # type: ignore[arg-type]
        )
    return record.to_json(indent=2)
