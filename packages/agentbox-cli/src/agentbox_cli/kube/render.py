"""Container mode's plan as Kubernetes objects (pure): a Pod with its PersistentVolumeClaims,
an agent-sandbox ``Sandbox``, or a ``SandboxTemplate``.

Everything comes from the one container plan (``agentbox_cli.container.plan``): the image, the
task's command, environment contract, hostname, working dir and mounts, the sidecar's entry
point and its ``/nix``. What Kubernetes does differently is said here once:

- the task runs as the user's uid/gid (``securityContext``, ``fsGroup``) in a user namespace
  (``hostUsers: false``), not as root dropping to ``dev``;
- ``/nix`` is a volume seeded once from the image's ``/nix`` by the ``prepare`` init container
  (container mode overlays the image's instead), served by the Nix daemon in the ``nix-daemon``
  container, mounted read-only into the task like the sidecar's;
- the state dirs (``/nix``, cargo, the compiler cache) are claims; the agents' config and the
  workspace are hostPaths for a local play, else claims (the workspace cloned from the
  project's git remote with ``--workspace git``).

agent-sandbox's controller adds one volume per ``volumeClaimTemplates`` entry to the Pod it makes,
named after the template, claiming ``<template>-<sandbox>`` (its sandbox controller, ``Volumes =
append(... PersistentVolumeClaim{ClaimName: pvcTemplate.Name + "-" + sandbox.Name})``). The Pod
format names its claims the same way and lists them last, so the Pod a Sandbox becomes is the
Pod this prints.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from agentbox_cli.container.plan import GUEST_INIT, NIX_SOCKET, ContainerPlan
from agentbox_cli.kube import FORMATS, WORKSPACES
from agentbox_guest_init.identity import DEV_HOME
from agentbox_podman.podman import ROLE_LABEL, WORKSPACE_LABEL, Mount
from agentbox_state.errors import UsageError

Doc = dict[str, object]

SANDBOX_API = "agents.x-k8s.io/v1beta1"  # agent-sandbox v1.0, api/v1beta1
TEMPLATE_API = "extensions.agents.x-k8s.io/v1beta1"  # extensions/api/v1beta1
ROLE = "kube"  # the objects' ROLE_LABEL value
MANAGED_BY = ("app.kubernetes.io/managed-by", "agentbox")  # Kubernetes' recommended label
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"  # kubectl exec/attach/logs
TASK, DAEMON, PREPARE, CLONE = "task", "nix-daemon", "prepare", "clone"
# the volumes every plan mount becomes (named after its target's last part), and the size of
# each as a claim
CLAIM_SIZES = {"workspace": "10Gi", "nix": "20Gi", "cargo": "10Gi", "sccache": "10Gi",
               "codex": "1Gi", "pi": "1Gi"}  # fmt: skip
USER_CONFIG = ("codex", "pi")  # the user's own dirs: hostPaths in a local play
HOME_VOLUME, TMP_VOLUME = "home", "tmp"  # emptyDirs: dev's home (under the mounts), /tmp
PREPARE_DIR = "/run/agentbox-prepare"  # where the prepare container sees the volumes
SEEDED = ".agentbox-seeded"  # in the /nix volume once the image's /nix is copied in
# a DNS-1123 subdomain: what a RuntimeClass's name must be
SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# a hostPath that Podman's kube play and the kubelet take as it is
PLAIN_PATH = re.compile(r"/[^:,\x00-\x1f\x7f]*")


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeRequest:
    format: str  # FORMATS
    workspace: str  # WORKSPACES
    name: str  # the Pod's (the Sandbox's, the template's) name
    uid: int
    gid: int
    mem_gib: int
    cpus: int
    runtime_class: str | None = None
    git_remote: str | None = None  # --workspace git: what the clone container fetches


def check_request(req: KubeRequest) -> None:
    """Refuse what cannot be rendered, naming the value and the fix."""
    if req.format not in FORMATS:
        raise UsageError(f"unknown --format {req.format!r}",
                         hint=f"choose from: {', '.join(FORMATS)}")  # fmt: skip
    if req.workspace not in WORKSPACES:
        raise UsageError(f"unknown --workspace {req.workspace!r}",
                         hint=f"choose from: {', '.join(WORKSPACES)}")  # fmt: skip
    rc = req.runtime_class
    if rc is not None and (len(rc) > 253 or not SUBDOMAIN.fullmatch(rc)):
        raise UsageError(
            f"invalid --runtime-class {rc!r}: a RuntimeClass name is a DNS subdomain",
            hint="lowercase letters, digits, '-' and '.', starting and ending with a letter or "
            "digit, at most 253 characters (for example gvisor or kata-qemu)",
        )
    if req.workspace == "git" and not req.git_remote:
        raise UsageError("--workspace git needs the project's git remote, and there is none")


def check_remote(url: str) -> str:
    """``url`` when a cluster can clone from it: not a path on this machine."""
    if url.startswith(("/", ".", "~", "file:")) or ("://" not in url and ":" not in url):
        raise UsageError(
            f"--workspace git: the remote {url!r} is a path on this machine, which a cluster "
            "cannot clone",
            hint="point the remote at a host the cluster reaches (https://... or git@host:...), "
            "or use --workspace pvc",
        )
    return url


def render(plan: ContainerPlan, req: KubeRequest) -> list[Doc]:
    """The documents to print, in order."""
    check_request(req)
    pod = _pod_parts(plan, req)
    labels = _labels(plan)
    if req.format == "pod":
        claims = [{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   **_claim(f"{v}-{req.name}", v, labels)} for v in pod.claims]  # fmt: skip
        meta = {"name": req.name, "labels": labels, "annotations": pod.annotations}
        spec = {**pod.spec, "volumes": [*pod.volumes, *_claim_volumes(pod.claims, req.name)]}
        return [*claims, {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}]
    blueprint: Doc = {
        "podTemplate": {
            "metadata": {"labels": labels, "annotations": pod.annotations},
            "spec": {**pod.spec, "volumes": pod.volumes},
        },
        "volumeClaimTemplates": [_claim(v, v, labels) for v in pod.claims],
    }
    api, kind = (SANDBOX_API, "Sandbox") if req.format == "sandbox" else \
        (TEMPLATE_API, "SandboxTemplate")  # fmt: skip
    return [{"apiVersion": api, "kind": kind, "metadata": {"name": req.name, "labels": labels},
             "spec": blueprint}]  # fmt: skip


@dataclass(frozen=True, slots=True)
class _PodParts:
    spec: Doc  # without volumes
    volumes: list[Doc]  # hostPaths and emptyDirs
    claims: list[str]  # the volumes that are claims, in order
    annotations: dict[str, str]


def _pod_parts(plan: ContainerPlan, req: KubeRequest) -> _PodParts:
    task = plan.task_for(daemon_starting=True)  # the daemon starts beside the task
    sources = {_volume_name(m): m for m in (*task.mounts, *plan.sidecar.run.mounts)}
    unknown = [m for m in task.mounts if _volume_name(m) not in CLAIM_SIZES]
    if unknown:
        m = unknown[0]
        raise UsageError(f"{m.target} (from {m.source}) has no Kubernetes volume",
                         hint="agentbox kube renders the plain container-mode sandbox: "
                         "leave out --agent")  # fmt: skip
    hostpaths = {"workspace", *USER_CONFIG} if req.workspace == "hostpath" else set()
    volumes: list[Doc] = []
    for name in (n for n in sources if n in hostpaths):
        path = os.fspath(sources[name].source)
        if not PLAIN_PATH.fullmatch(path):
            raise UsageError(
                f"{path} cannot be a hostPath (it has ':', ',' or a control character)",
                hint="use --workspace pvc or --workspace git, or move the project",
            )
        kind = "Directory" if name == "workspace" else "DirectoryOrCreate"
        volumes.append({"name": name, "hostPath": {"path": path, "type": kind}})
    tmp = task.tmpfs[0].split(":", 1)[0] if task.tmpfs else "/tmp"
    volumes += [{"name": HOME_VOLUME, "emptyDir": {}},
                {"name": TMP_VOLUME, "emptyDir": {"medium": "Memory"}}]  # fmt: skip
    claims = [n for n in sources if n not in hostpaths]
    as_root = req.uid == 0 or ("AGENTBOX_ENTER_AS_ROOT", "1") in task.env
    uid, gid = (0, 0) if as_root else (req.uid, req.gid)
    size = {"cpu": str(req.cpus), "memory": f"{req.mem_gib}Gi"}
    mounts: list[Doc] = [{"name": HOME_VOLUME, "mountPath": DEV_HOME},
                         {"name": TMP_VOLUME, "mountPath": tmp}]  # fmt: skip
    mounts += [_mount(m) for m in task.mounts]
    command_given = bool(task.command)
    task_container: Doc = {
        "name": TASK,
        "image": task.image,
        "imagePullPolicy": "IfNotPresent",
        "command": [GUEST_INIT, "container", "enter", "--"],
        **({"args": list(task.command)} if command_given else {}),
        "workingDir": task.workdir or "/workspace",
        "env": [{"name": k, "value": v} for k, v in task.env],
        **({} if command_given else {"stdin": True, "tty": True}),
        "resources": {"requests": size, "limits": dict(size)},
        "securityContext": {
            "runAsUser": uid,
            "runAsGroup": gid,
            "runAsNonRoot": uid != 0,
            "allowPrivilegeEscalation": False,
        },
        "volumeMounts": mounts,
    }
    side = plan.sidecar.run
    daemon: Doc = {
        "name": DAEMON,
        "image": side.image,
        "imagePullPolicy": "IfNotPresent",
        "command": [side.entrypoint or "nix-daemon"],
        "workingDir": "/",
        "securityContext": {"runAsUser": 0, "runAsGroup": 0},
        "volumeMounts": [_mount(m) for m in side.mounts],
    }
    owned = [HOME_VOLUME, *(n for n in claims if n != "nix")]
    skeleton = home_skeleton([m.target for m in task.mounts]) if uid != 0 else ()
    inits = [_prepare(task.image, owned, uid, gid, skeleton)]
    if req.workspace == "git" and req.git_remote:
        inits.append(_clone(task.image, req.git_remote, task.workdir or "/workspace"))
    spec: Doc = {
        "hostname": task.hostname,
        "hostUsers": False,
        "automountServiceAccountToken": False,
        **({"runtimeClassName": req.runtime_class} if req.runtime_class else {}),
        "restartPolicy": "Never" if command_given else "Always",
        "securityContext": {"runAsUser": uid, "runAsGroup": gid, "fsGroup": gid},
        "initContainers": inits,
        "containers": [task_container, daemon],
    }
    return _PodParts(spec=spec, volumes=volumes, claims=claims,
                     annotations={DEFAULT_CONTAINER: TASK})  # fmt: skip


def home_skeleton(targets: list[str]) -> tuple[tuple[str, int], ...]:
    """(path under dev's home, mode) of the dirs the prepare container makes dev's (pure): the
    guest init's home dirs, and the parents of the mounts under the home, parents first.
    Otherwise the runtime makes a mount's parent (``.cache`` of ``.cache/sccache``) as root,
    and dev, who is not root in a pod, cannot write its home's cache."""
    from agentbox_guest_init.home import home_dirs

    dirs = {path: mode for path, mode in home_dirs(DEV_HOME)[1:]}
    for target in targets:
        parent = os.path.dirname(target)
        while parent.startswith(f"{DEV_HOME}/"):
            dirs.setdefault(parent, 0o755)
            parent = os.path.dirname(parent)
    return tuple(sorted((p.removeprefix(f"{DEV_HOME}/"), mode) for p, mode in dirs.items()))


def prepare_script(owned: list[str], uid: int, gid: int,
                   skeleton: tuple[tuple[str, int], ...] = ()) -> str:  # fmt: skip
    """The prepare container's script (pure): seed the /nix volume from the image's /nix
    once, remove the last daemon's socket from it (a task must not take it for the new
    daemon's: connection refused), give dev the roots of its volumes while root owns them
    (never recursively: what is in them keeps its owners) and the ``skeleton`` of its home
    (see ``home_skeleton``), make /tmp the usual sticky world-writable dir."""
    d, seeded = PREPARE_DIR, f"{PREPARE_DIR}/nix/{SEEDED}"
    stale = f"{d}/nix/{NIX_SOCKET.removeprefix('/nix/')}"
    script = (f"set -eu; if [ ! -e {seeded} ]; then cp -a /nix/. {d}/nix/ && touch {seeded}; "
              f"fi; rm -f {stale}; chmod 1777 {d}/{TMP_VOLUME}")  # fmt: skip
    if uid != 0:
        dirs = " ".join(f"{d}/{n}" for n in owned)
        script += (f'; for v in {dirs}; do if [ "$(stat -c %u "$v")" = 0 ]; then '
                   f'chown {uid}:{gid} "$v"; fi; done')  # fmt: skip
    if skeleton:
        entries = " ".join(f"{mode:o}:{path}" for path, mode in skeleton)
        script += (f'; for e in {entries}; do install -d -o {uid} -g {gid} -m "${{e%%:*}}" '
                   f'"{d}/{HOME_VOLUME}/${{e#*:}}"; done')  # fmt: skip
    return script


def clone_script(workdir: str) -> str:
    """The clone container's script (pure): fetch the remote into an empty workspace and check
    out its default branch; a workspace that has a repository already is left as it is. Works
    in a claim's non-empty root (ext4's lost+found)."""
    w = shlex.quote(workdir)
    g = f"git -C {w}"
    return (
        f'set -eu; if [ ! -e {w}/.git ]; then {g} init -q; {g} remote add origin "$GIT_REMOTE"; '
        f"{g} fetch -q origin; {g} remote set-head origin --auto >/dev/null; "
        f"head=$({g} symbolic-ref --short refs/remotes/origin/HEAD); "
        f'{g} checkout -q -B "${{head#origin/}}" "$head"; fi'
    )


def _prepare(image: str, owned: list[str], uid: int, gid: int,
             skeleton: tuple[tuple[str, int], ...]) -> Doc:  # fmt: skip
    names = ["nix", TMP_VOLUME, *owned]
    return {
        "name": PREPARE,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", prepare_script(owned, uid, gid, skeleton)],
        "workingDir": "/",
        "securityContext": {"runAsUser": 0, "runAsGroup": 0},
        "volumeMounts": [{"name": n, "mountPath": f"{PREPARE_DIR}/{n}"} for n in names],
    }


def _clone(image: str, remote: str, workdir: str) -> Doc:
    return {
        "name": CLONE,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", clone_script(workdir)],
        "workingDir": "/",
        "env": [
            {"name": "GIT_REMOTE", "value": remote},
            {"name": "HOME", "value": "/tmp"},
            {"name": "GIT_TERMINAL_PROMPT", "value": "0"},
        ],
        "volumeMounts": [
            {"name": "workspace", "mountPath": workdir},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
    }


def _volume_name(mount: Mount) -> str:
    return os.path.basename(mount.target).lstrip(".")


def _mount(mount: Mount) -> Doc:
    return {"name": _volume_name(mount), "mountPath": mount.target,
            **({"readOnly": True} if mount.readonly else {})}  # fmt: skip


def _labels(plan: ContainerPlan) -> dict[str, str]:
    key = dict(plan.task.labels)[WORKSPACE_LABEL]
    return {ROLE_LABEL: ROLE, WORKSPACE_LABEL: key, MANAGED_BY[0]: MANAGED_BY[1]}


def _claim(name: str, volume: str, labels: dict[str, str]) -> Doc:
    """A claim's metadata and spec: a PersistentVolumeClaim's, or a volume claim template's."""
    spec = {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": CLAIM_SIZES[volume]}}}  # fmt: skip
    return {"metadata": {"name": name, "labels": labels}, "spec": spec}


def _claim_volumes(names: list[str], owner: str) -> list[Doc]:
    return [{"name": n, "persistentVolumeClaim": {"claimName": f"{n}-{owner}"}} for n in names]
