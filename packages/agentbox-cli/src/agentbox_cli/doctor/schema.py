"""The documented schema of ``agentbox doctor --json`` (``schema.json``, JSON Schema 2020-12),
and a checker for the part of JSON Schema it uses (type, enum, required, properties,
additionalProperties: false, items), so the tests validate real output without a dependency."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).with_name("schema.json")
TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "null": (type(None),), "integer": (int,), "number": (int, float),
}  # fmt: skip


def load_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


def problems(value: object, schema: Mapping[str, Any], where: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (empty: it is valid)."""
    kinds = schema.get("type", [])
    names: list[str] = [kinds] if isinstance(kinds, str) else list(kinds)
    if names and not any(
        isinstance(value, TYPES[n]) and not (n != "boolean" and isinstance(value, bool))
        for n in names
    ):
        return [f"{where}: {json.dumps(value)[:60]} is not {' or '.join(names)}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {json.dumps(value)} is not one of {schema['enum']}"]
    found: list[str] = []
    props: Mapping[str, Any] = schema.get("properties", {})
    if isinstance(value, dict) and props:
        found += [f"{where}: {key} is missing" for key in schema.get("required", [])
                  if key not in value]  # fmt: skip
        for key, item in value.items():
            if key in props:
                found += problems(item, props[key], f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{where}: {key} is not in the schema")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += problems(item, schema["items"], f"{where}[{i}]")
    return found
