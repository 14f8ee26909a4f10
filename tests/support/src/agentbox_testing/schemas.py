"""The JSON documents agentbox prints against the schema files it documents.

Each ``--json`` output has a ``schema.json`` (JSON Schema 2020-12) beside the code that makes it
(``agentbox_cli.doctor``, ``.tasks``, ``.keep``); the README points users to them. The tests
check real output against them with ``jsonschema``, which also checks each schema file itself.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema


def load_schema(package: str) -> dict[str, Any]:
    """``package``'s ``schema.json``, checked to be a valid 2020-12 schema."""
    text = resources.files(package).joinpath("schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def problems(doc: object, schema: dict[str, Any]) -> list[str]:
    """Where ``doc`` breaks ``schema``, one ``PATH: message`` line each, in path order
    (empty: it is valid)."""
    validator = jsonschema.Draft202012Validator(schema)
    found = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{e.json_path}: {e.message}" for e in found]
