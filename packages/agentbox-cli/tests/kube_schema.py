"""What the Kubernetes API would accept of ``agentbox kube``'s documents, checked offline.

Core objects (Pod, PersistentVolumeClaim) are checked by kubernetes-validate against its strict
schemas for ``K8S_VERSION``. agent-sandbox's Sandbox and SandboxTemplate are checked against
their v1beta1 CRD schemas (``data/agent-sandbox-v1beta1.json``, whose ``source`` says where each
part came from), with the core types they embed (PodSpec, PersistentVolumeClaimSpec, ...)
taken from the same kubernetes-validate directory. Strict means an unknown field fails: the API
server would drop it without a word.

Both checks raise AssertionError naming each place in the document that is wrong and why.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # no type information: Any to mypy (pyproject's override)
from referencing import Registry, Resource

# The oldest minor the documents are meant for: user namespaces (hostUsers: false, which the
# rendered Pod sets) are on by default from 1.33. agent-sandbox builds against a newer k8s.io/api,
# whose PodSpec has every field this one has.
K8S_VERSION = "1.33"

SCHEMA_FILE = Path(__file__).parent / "data" / "agent-sandbox-v1beta1.json"
KINDS = ("Sandbox", "SandboxTemplate")


# RFC 3339 date-time, the format the API server checks; jsonschema checks it only with an extra
# package installed, so it gets its own checker here.
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # format applies to strings only
    if not _DATE_TIME.fullmatch(value):
        return False
    datetime.datetime.fromisoformat(value.upper())  # out-of-range fields raise ValueError
    return True


def validate_core(doc: Mapping[str, object]) -> None:
    """``doc``, a core object (Pod, PersistentVolumeClaim, ...), is valid for ``K8S_VERSION``
    with no field the API server does not know."""
    what = _what(doc)
    try:
        used = kubernetes_validate.validate(dict(doc), K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as e:
        raise AssertionError(f"{what}: {e.message}") from None
    except jsonschema.ValidationError as e:
        raise AssertionError(f"{what} is not a valid {K8S_VERSION} object:\n{_line(e)}") from None
    assert used == K8S_VERSION, f"kubernetes-validate checked {what} against {used}"


def validate_agent_sandbox(doc: Mapping[str, object]) -> None:
    """``doc``, a Sandbox or SandboxTemplate, is valid for agent-sandbox v1beta1's CRD (with
    ``K8S_VERSION``'s core types) and has no field the API server would prune."""
    what = _what(doc)
    kind = doc.get("kind")
    if kind not in KINDS:
        raise AssertionError(f"{what}: not an agent-sandbox kind (one of {', '.join(KINDS)})")
    schema, registry = _schemas()
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"{schema['$id']}#/$defs/{kind}"}, registry=registry, format_checker=FORMATS
    )
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = "\n".join(_line(e) for e in errors)
        raise AssertionError(f"{what} is not a valid agent-sandbox v1beta1 object:\n{lines}")


@functools.cache
def _schemas() -> tuple[dict[str, Any], Registry[Any]]:
    """The agent-sandbox schema (checked to be a valid 2020-12 schema) and a registry holding
    it and kubernetes-validate's strict core definitions, nothing fetched."""
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    strict = f"v{K8S_VERSION}.0-local-strict"
    where = resources.files("kubernetes_validate") / "kubernetes-json-schema" / strict
    core = json.loads((where / "_definitions.json").read_text(encoding="utf-8"))
    # Each is registered under its own $id: this file's urn, and kubernetes-validate's
    # https://kubernetes.io/api/_definitions.json, which the data file's core $refs name.
    registry: Registry[Any] = [
        Resource.from_contents(schema),
        Resource.from_contents(core),
    ] @ Registry()
    return schema, registry


def _what(doc: Mapping[str, object]) -> str:
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return f"{doc.get('kind', '<no kind>')} {name or '<no name>'}"


def _line(error: jsonschema.ValidationError) -> str:
    return f"  {error.json_path}: {error.message}"
