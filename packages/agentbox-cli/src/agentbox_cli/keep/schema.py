"""The documented schema of ``agentbox disks --json`` (``schema.json``), checked with doctor's
checker of the part of JSON Schema both use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentbox_cli.doctor.schema import problems

SCHEMA_FILE = Path(__file__).with_name("schema.json")
__all__ = ["SCHEMA_FILE", "load_schema", "problems"]


def load_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded
