"""The Kubernetes schema checks (kube_schema) pass what the API accepts and fail what it would
refuse or silently prune: without this, a check that passes everything would look the same."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kube_schema import validate_agent_sandbox, validate_core

CONTAINER = {"name": "task", "image": "localhost/agentbox:latest"}
SANDBOX: dict[str, object] = {
    "apiVersion": "agents.x-k8s.io/v1beta1",
    "kind": "Sandbox",
    "metadata": {"name": "agentbox-app"},
    "spec": {"podTemplate": {"spec": {"containers": [CONTAINER]}}},
}
TEMPLATE: dict[str, object] = {
    "apiVersion": "extensions.agents.x-k8s.io/v1beta1",
    "kind": "SandboxTemplate",
    "metadata": {"name": "agentbox-app"},
    "spec": {"podTemplate": {"spec": {"containers": [CONTAINER]}}},
}
POD: dict[str, object] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "agentbox-app"},
    "spec": {"containers": [CONTAINER]},
}
CLAIM: dict[str, object] = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "home-agentbox-app"},
    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
}


def changed(doc: dict[str, object], path: str, value: object) -> dict[str, object]:
    """A deep copy of ``doc`` with ``value`` at ``path`` (dotted; digits index lists)."""
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    here: Any = out
    for key in parents:
        here = here[int(key)] if isinstance(here, list) else here[key]
    here[last] = value
    return out


def test_a_minimal_sandbox_and_template_pass() -> None:
    validate_agent_sandbox(SANDBOX)
    validate_agent_sandbox(TEMPLATE)


def test_a_sandbox_with_every_field_of_its_own_passes() -> None:
    spec = {
        "podTemplate": {"metadata": {"labels": {"a": "b"}, "annotations": {"c": "d"}},
                        "spec": {"containers": [CONTAINER], "hostUsers": False}},
        "volumeClaimTemplates": [{"metadata": {"name": "home", "labels": {"a": "b"}},
                                  "spec": CLAIM["spec"]}],
        "service": False,
        "shutdownTime": "2030-01-02T03:04:05Z",
        "shutdownPolicy": "Delete",
        "operatingMode": "Suspended",
    }  # fmt: skip
    validate_agent_sandbox(changed(SANDBOX, "spec", spec))


def test_a_template_with_its_policies_and_generated_secrets_passes() -> None:
    spec = {
        "podTemplate": {"spec": {"containers": [CONTAINER]}},
        "networkPolicy": {"ingress": [{"ports": [{"port": 8080}]}], "egress": []},
        "networkPolicyManagement": "Unmanaged",
        "envVarsInjectionPolicy": "Overrides",
        "volumeClaimTemplatesPolicy": "Allowed",
        "generatedSecrets": [{"name": "api-token", "data": [{"key": "t", "lengthBytes": 64}]}],
    }
    validate_agent_sandbox(changed(TEMPLATE, "spec", spec))


@pytest.mark.parametrize(
    ("doc", "path", "value", "where"),
    [
        pytest.param(SANDBOX, "spec.bogus", 1, "$.spec", id="unknown-spec-field"),
        pytest.param(
            SANDBOX,
            "spec.podTemplate.spec.containers.0.bogus",
            1,
            "$.spec.podTemplate.spec.containers[0]",
            id="unknown-container-field",
        ),
        pytest.param(
            SANDBOX,
            "spec.podTemplate.metadata",
            {"name": "x"},
            "$.spec.podTemplate.metadata",
            id="pod-template-name",
        ),
        pytest.param(
            SANDBOX, "spec.operatingMode", "Paused", "$.spec.operatingMode", id="operating-mode"
        ),
        pytest.param(
            SANDBOX, "spec.shutdownPolicy", "Keep", "$.spec.shutdownPolicy", id="shutdown-policy"
        ),
        pytest.param(
            SANDBOX, "spec.shutdownTime", "tomorrow", "$.spec.shutdownTime", id="shutdown-time"
        ),
        pytest.param(SANDBOX, "spec.service", "yes", "$.spec.service", id="service"),
        pytest.param(
            SANDBOX,
            "spec.volumeClaimTemplates",
            [{"metadata": {"name": "home"}}],
            "$.spec.volumeClaimTemplates[0]",
            id="claim-without-spec",
        ),
        pytest.param(
            SANDBOX,
            "spec.volumeClaimTemplates",
            [{"spec": {"size": "1Gi"}}],
            "$.spec.volumeClaimTemplates[0].spec",
            id="unknown-claim-field",
        ),
        pytest.param(
            SANDBOX, "apiVersion", "agents.x-k8s.io/v1alpha1", "$.apiVersion", id="old-api-version"
        ),
        pytest.param(SANDBOX, "bogus", 1, "$", id="unknown-top-level-field"),
        pytest.param(
            TEMPLATE,
            "spec.networkPolicyManagement",
            "Bogus",
            "$.spec.networkPolicyManagement",
            id="network-policy-management",
        ),
        pytest.param(
            TEMPLATE,
            "spec.networkPolicy",
            {"podSelector": {}},
            "$.spec.networkPolicy",
            id="network-policy-pod-selector",
        ),
        pytest.param(
            TEMPLATE,
            "spec.generatedSecrets",
            [{"name": "Upper", "data": [{"key": "t"}]}],
            "$.spec.generatedSecrets[0].name",
            id="secret-name",
        ),
        pytest.param(
            TEMPLATE,
            "spec.generatedSecrets",
            [{"name": "s", "data": []}],
            "$.spec.generatedSecrets[0].data",
            id="secret-without-data",
        ),
        pytest.param(
            TEMPLATE,
            "spec.generatedSecrets",
            [{"name": "s", "data": [{"key": "t", "lengthBytes": 16}]}],
            "$.spec.generatedSecrets[0].data[0].lengthBytes",
            id="secret-length",
        ),
        pytest.param(
            TEMPLATE, "spec.operatingMode", "Running", "$.spec", id="template-operating-mode"
        ),
    ],
)
def test_what_the_api_would_refuse_or_prune_fails(
    doc: dict[str, object], path: str, value: object, where: str
) -> None:
    with pytest.raises(AssertionError, match="is not a valid agent-sandbox v1beta1 object") as e:
        validate_agent_sandbox(changed(doc, path, value))
    assert f"\n  {where}: " in str(e.value)


def test_the_reason_is_in_the_message() -> None:
    with pytest.raises(AssertionError) as e:
        validate_agent_sandbox(changed(SANDBOX, "spec.operatingMode", "Paused"))
    assert str(e.value) == (
        "Sandbox agentbox-app is not a valid agent-sandbox v1beta1 object:\n"
        "  $.spec.operatingMode: 'Paused' is not one of ['Running', 'Suspended']"
    )


def test_only_agent_sandbox_kinds_are_checked_against_its_schema() -> None:
    with pytest.raises(AssertionError, match="Pod agentbox-app: not an agent-sandbox kind"):
        validate_agent_sandbox(POD)


def test_a_minimal_pod_and_claim_pass() -> None:
    validate_core(POD)
    validate_core(CLAIM)
    validate_core(changed(POD, "spec.hostUsers", False))


@pytest.mark.parametrize(
    ("doc", "path", "where"),
    [
        (POD, "spec.bogus", "Pod agentbox-app: $.spec"),
        (POD, "spec.containers.0.bogus", "Pod agentbox-app: $.spec.containers[0]"),
        (
            CLAIM,
            "spec.resources.bogus",
            "PersistentVolumeClaim home-agentbox-app: $.spec.resources",
        ),
    ],
    ids=["unknown-pod-field", "unknown-container-field", "unknown-claim-field"],
)
def test_a_core_object_with_an_unknown_field_fails(
    doc: dict[str, object], path: str, where: str
) -> None:
    with pytest.raises(AssertionError) as e:
        validate_core(changed(doc, path, 1))
    what, path_in_doc = where.split(": ")
    assert str(e.value) == (
        f"{what} is not a valid 1.33 object:\n"
        f"  {path_in_doc}: Additional properties are not allowed ('bogus' was unexpected)"
    )


def test_a_kind_kubernetes_validate_does_not_know_fails() -> None:
    with pytest.raises(AssertionError, match="Sandbox agentbox-app: Couldn't find schema"):
        validate_core(SANDBOX)
