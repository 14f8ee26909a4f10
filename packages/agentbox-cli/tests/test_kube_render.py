"""agentbox kube's objects, rendered from container mode's own plan.

Pinned against what the APIs accept: the core/v1 Pod and PersistentVolumeClaim fields
(https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/), and
agent-sandbox v1beta1's Sandbox/SandboxTemplate (kubernetes-sigs/agent-sandbox
api/v1beta1/sandbox_types.go, extensions/api/v1beta1/sandboxtemplate_types.go); the documents
are also validated against those schemas (kube_schema, its data in tests/data) and the Pod is
played for real with Podman (tests/integration/test_kube.py).
"""

import dataclasses
from pathlib import Path

import pytest
from kube_schema import validate_agent_sandbox, validate_core

from agentbox_cli.container.plan import ContainerRequest, HostFacts, plan_container
from agentbox_cli.kube.render import KubeRequest, check_remote, clone_script, home_skeleton, render
from agentbox_podman.podman import Mount
from agentbox_state.errors import UsageError

HOST = HostFacts(uid=1000, gid=1000, home=Path("/home/u"), cwd=Path("/src/app"),
                 stdin_tty=True, stdout_tty=True)  # fmt: skip
REQ = ContainerRequest(
    image="localhost/agentbox:latest", workspace_key="app-0123456789ab", slug="app",
    hostname="app-agentbox", task_name="app-00112233aabbccdd", state_dir=Path("/s/ws"),
    sccache=Path("/s/sccache"), command=("make", "test"), root=False, debug=False, grace=120,
)  # fmt: skip
KUBE = KubeRequest(format="pod", workspace="hostpath", name="agentbox-app-0123456789ab",
                   uid=1000, gid=1000, mem_gib=4, cpus=2)  # fmt: skip
LABELS = {"agentbox.role": "kube", "agentbox.workspace": "app-0123456789ab",
          "app.kubernetes.io/managed-by": "agentbox"}  # fmt: skip
IMAGE = "localhost/agentbox:latest"
P = "/run/agentbox-prepare"


def docs(kube: KubeRequest = KUBE, req: ContainerRequest = REQ) -> list[dict[str, object]]:
    return render(plan_container(req, HOST), kube)


def claim(name: str, size: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"{name}-agentbox-app-0123456789ab", "labels": LABELS},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": size}}}}  # fmt: skip


def controller_pod_spec(sandbox: dict[str, object]) -> dict[str, object]:
    """The Pod spec agent-sandbox's sandbox controller makes of a Sandbox: the template's, with
    one volume per volume claim template appended, named after it, claiming
    ``<template>-<sandbox>`` (controllers/sandbox_controller.go, the loop over
    ``sandbox.Spec.VolumeClaimTemplates`` before the Pod is created)."""
    spec = sandbox["spec"]
    meta = sandbox["metadata"]
    assert isinstance(spec, dict)
    assert isinstance(meta, dict)
    template = dict(spec["podTemplate"]["spec"])
    added = [{"name": t["metadata"]["name"],
              "persistentVolumeClaim": {"claimName": f"{t['metadata']['name']}-{meta['name']}"}}
             for t in spec["volumeClaimTemplates"]]  # fmt: skip
    return {**template, "volumes": [*template["volumes"], *added]}


def test_the_pod_of_a_command_with_its_claims() -> None:
    seed = (f"set -eu; if [ ! -e {P}/nix/.agentbox-seeded ]; then cp -a /nix/. {P}/nix/ && "
            f"touch {P}/nix/.agentbox-seeded; fi; rm -f {P}/nix/var/nix/daemon-socket/socket; "
            f"chmod 1777 {P}/tmp; for v in {P}/home "
            f'{P}/cargo {P}/sccache; do if [ "$(stat -c %u "$v")" = 0 ]; then chown 1000:1000 '
            '"$v"; fi; done; for e in 755:.cache 700:.cache/tmp 755:.config 755:.local '
            '755:.local/share 700:.local/state; do install -d -o 1000 -g 1000 -m "${e%%:*}" '
            f'"{P}/home/${{e#*:}}"; done')  # fmt: skip
    size = {"cpu": "2", "memory": "4Gi"}
    assert docs() == [
        claim("nix", "20Gi"), claim("cargo", "10Gi"), claim("sccache", "10Gi"),
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "agentbox-app-0123456789ab", "labels": LABELS,
                      "annotations": {"kubectl.kubernetes.io/default-container": "task"}},
         "spec": {
             "hostname": "app-agentbox", "hostUsers": False,
             "automountServiceAccountToken": False, "restartPolicy": "Never",
             "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
             "initContainers": [{
                 "name": "prepare", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                 "command": ["/bin/sh", "-c", seed], "workingDir": "/",
                 "securityContext": {"runAsUser": 0, "runAsGroup": 0},
                 "volumeMounts": [{"name": n, "mountPath": f"{P}/{n}"}
                                  for n in ("nix", "tmp", "home", "cargo", "sccache")],
             }],
             "containers": [
                 {"name": "task", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                  "command": ["/usr/bin/agentbox-guest-init", "container", "enter", "--"],
                  "args": ["make", "test"], "workingDir": "/workspace",
                  "env": [{"name": "AGENTBOX_HOST_UID", "value": "1000"},
                          {"name": "AGENTBOX_HOST_GID", "value": "1000"},
                          {"name": "NIX_REMOTE",
                           "value": "unix:///nix/var/nix/daemon-socket/socket"},
                          {"name": "SCCACHE_DIR", "value": "/home/dev/.cache/sccache"},
                          {"name": "AGENTBOX_NIX_DAEMON_STARTING", "value": "1"}],
                  "resources": {"requests": size, "limits": size},
                  "securityContext": {"runAsUser": 1000, "runAsGroup": 1000,
                                      "runAsNonRoot": True, "allowPrivilegeEscalation": False},
                  "volumeMounts": [
                      {"name": "home", "mountPath": "/home/dev"},
                      {"name": "tmp", "mountPath": "/tmp"},
                      {"name": "workspace", "mountPath": "/workspace"},
                      {"name": "nix", "mountPath": "/nix", "readOnly": True},
                      {"name": "codex", "mountPath": "/home/dev/.codex"},
                      {"name": "pi", "mountPath": "/home/dev/.pi"},
                      {"name": "cargo", "mountPath": "/home/dev/.cargo"},
                      {"name": "sccache", "mountPath": "/home/dev/.cache/sccache"},
                  ]},
                 {"name": "nix-daemon", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                  "command": ["/usr/libexec/agentbox/nix-sidecar"], "workingDir": "/",
                  "securityContext": {"runAsUser": 0, "runAsGroup": 0},
                  "volumeMounts": [{"name": "nix", "mountPath": "/nix"}]},
             ],
             "volumes": [
                 {"name": "workspace", "hostPath": {"path": "/src/app", "type": "Directory"}},
                 {"name": "codex",
                  "hostPath": {"path": "/home/u/.codex", "type": "DirectoryOrCreate"}},
                 {"name": "pi", "hostPath": {"path": "/home/u/.pi", "type": "DirectoryOrCreate"}},
                 {"name": "home", "emptyDir": {}},
                 {"name": "tmp", "emptyDir": {"medium": "Memory"}},
                 *({"name": n, "persistentVolumeClaim":
                    {"claimName": f"{n}-agentbox-app-0123456789ab"}}
                   for n in ("nix", "cargo", "sccache")),
             ],
         }},
    ]  # fmt: skip


def test_a_shell_keeps_a_terminal_and_the_pod_restarts() -> None:
    (pod,) = docs(req=dataclasses.replace(REQ, command=()))[-1:]
    spec = pod["spec"]
    assert isinstance(spec, dict)
    task = spec["containers"][0]
    assert (spec["restartPolicy"], task["stdin"], task["tty"]) == ("Always", True, True)
    assert "args" not in task


def test_root_runs_the_task_as_root_and_prepares_no_ownership() -> None:
    (pod,) = docs(req=dataclasses.replace(REQ, root=True))[-1:]
    spec = pod["spec"]
    assert isinstance(spec, dict)
    task = spec["containers"][0]
    assert task["securityContext"]["runAsUser"] == 0
    assert task["securityContext"]["runAsNonRoot"] is False
    assert {"name": "AGENTBOX_ENTER_AS_ROOT", "value": "1"} in task["env"]
    assert "chown" not in spec["initContainers"][0]["command"][2]


@pytest.mark.parametrize("fmt", ["sandbox", "template"])
def test_a_sandbox_becomes_the_pod_that_was_rendered(fmt: str) -> None:
    (pod,) = docs()[-1:]
    (sandbox,) = docs(dataclasses.replace(KUBE, format=fmt))
    api = {"sandbox": ("agents.x-k8s.io/v1beta1", "Sandbox"),
           "template": ("extensions.agents.x-k8s.io/v1beta1", "SandboxTemplate")}[fmt]  # fmt: skip
    assert (sandbox["apiVersion"], sandbox["kind"]) == api
    assert sandbox["metadata"] == {"name": "agentbox-app-0123456789ab", "labels": LABELS}
    assert controller_pod_spec(sandbox) == pod["spec"]
    spec = sandbox["spec"]
    assert isinstance(spec, dict)
    assert spec["podTemplate"]["metadata"] == {
        "labels": LABELS,
        "annotations": {"kubectl.kubernetes.io/default-container": "task"},
    }
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == [
        "nix", "cargo", "sccache"]  # fmt: skip


def test_claims_for_the_workspace_and_the_agents_config_off_the_host() -> None:
    objects = docs(dataclasses.replace(KUBE, workspace="pvc"))
    names = [o["metadata"]["name"] for o in objects[:-1]]  # type: ignore[index]
    assert names == [f"{n}-agentbox-app-0123456789ab"
                     for n in ("workspace", "nix", "codex", "pi", "cargo", "sccache")]  # fmt: skip
    spec = objects[-1]["spec"]
    assert isinstance(spec, dict)
    assert not [v for v in spec["volumes"] if "hostPath" in v]
    prepare = spec["initContainers"][0]["command"][2]
    assert f"{P}/workspace {P}/codex {P}/pi {P}/cargo {P}/sccache" in prepare


def test_a_git_workspace_is_cloned_by_the_user_before_the_task() -> None:
    kube = dataclasses.replace(KUBE, workspace="git", git_remote="https://example.com/x.git")
    spec = docs(kube)[-1]["spec"]
    assert isinstance(spec, dict)
    assert [c["name"] for c in spec["initContainers"]] == ["prepare", "clone"]
    assert spec["initContainers"][1] == {
        "name": "clone", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", clone_script("/workspace")], "workingDir": "/",
        "env": [{"name": "GIT_REMOTE", "value": "https://example.com/x.git"},
                {"name": "HOME", "value": "/tmp"}, {"name": "GIT_TERMINAL_PROMPT", "value": "0"}],
        "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }  # fmt: skip


def test_the_runtime_class_and_the_size() -> None:
    kube = dataclasses.replace(KUBE, runtime_class="kata-qemu", mem_gib=16, cpus=6)
    spec = docs(kube)[-1]["spec"]
    assert isinstance(spec, dict)
    assert spec["runtimeClassName"] == "kata-qemu"
    assert spec["containers"][0]["resources"]["limits"] == {"cpu": "6", "memory": "16Gi"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "deployment"}, "unknown --format 'deployment'"),
        ({"workspace": "nfs"}, "unknown --workspace 'nfs'"),
        ({"runtime_class": "Kata_QEMU"}, "invalid --runtime-class 'Kata_QEMU'"),
        ({"runtime_class": "-kata"}, "invalid --runtime-class '-kata'"),
        ({"workspace": "git"}, "--workspace git needs the project's git remote"),
    ],
    ids=["format", "workspace", "runtime-class-case", "runtime-class-dash", "git-no-remote"],
)
def test_bad_requests_are_refused(change: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(")):
        docs(dataclasses.replace(KUBE, **change))  # type: ignore[arg-type]


def test_a_project_path_that_cannot_be_a_host_path() -> None:
    host = dataclasses.replace(HOST, cwd=Path("/src/a:b"))
    with pytest.raises(UsageError, match=r"^/src/a:b cannot be a hostPath") as err:
        render(plan_container(REQ, host), KUBE)
    assert err.value.hint == "use --workspace pvc or --workspace git, or move the project"
    assert render(plan_container(REQ, host), dataclasses.replace(KUBE, workspace="pvc"))


def test_an_agent_worktree_is_not_rendered() -> None:
    req = dataclasses.replace(REQ, agent_mounts=(Mount(Path("/src/app/.git"), "/src/app/.git"),))
    with pytest.raises(UsageError, match=r"^/src/app/.git \(from /src/app/.git\) has no"):
        docs(req=req)


@pytest.mark.parametrize("url", ["https://example.com/x.git", "git@example.com:x.git",
                                 "ssh://git@example.com/x.git"])  # fmt: skip
def test_remotes_a_cluster_can_clone(url: str) -> None:
    assert check_remote(url) == url


@pytest.mark.parametrize("url", ["/srv/x.git", "../x", "file:///srv/x.git", "x"])
def test_remotes_on_this_machine_are_refused(url: str) -> None:
    with pytest.raises(UsageError, match="is a path on this machine"):
        check_remote(url)


@pytest.mark.parametrize("workspace", ["hostpath", "pvc", "git"])
@pytest.mark.parametrize("fmt", ["pod", "sandbox", "template"])
def test_every_document_is_one_the_api_accepts(fmt: str, workspace: str) -> None:
    kube = dataclasses.replace(KUBE, format=fmt, workspace=workspace, runtime_class="gvisor",
                               git_remote="https://example.com/x.git")  # fmt: skip
    for req in (REQ, dataclasses.replace(REQ, command=(), root=True)):
        for doc in docs(kube, req):
            if fmt == "pod":
                validate_core(doc)
            else:
                validate_agent_sandbox(doc)


def test_the_home_skeleton_holds_the_parents_of_mounts_under_the_home() -> None:
    got = home_skeleton(["/home/dev/.cache/sccache", "/home/dev/.config/gh/hosts", "/workspace",
                         "/home/dev/.codex"])  # fmt: skip
    assert got == (
        (".cache", 0o755), (".cache/tmp", 0o700), (".config", 0o755), (".config/gh", 0o755),
        (".local", 0o755), (".local/share", 0o755), (".local/state", 0o700),
    )  # fmt: skip
