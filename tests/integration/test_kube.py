"""`agentbox kube --format pod` played by Podman as the ordinary test user: the command runs in
the project's workspace as the user's uid, reaches the Nix daemon of the pod's own daemon
container, and what it adds to the store is there in the next play of the same pod.

Podman 4.3 takes ``podman kube play --userns keep-id`` (podman-kube-play(1): "--userns=mode";
it ignores the pod's ``hostUsers``); it needs ``catatonit`` for its pause image on Debian
(HOST-NOTES). ``podman kube down`` removes the pod and its containers; the claims' volumes are
the sandbox's persistent state, as a cluster's PersistentVolumeClaims are, and are removed here
by the test."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import yaml

pytestmark = [pytest.mark.root, pytest.mark.podman, pytest.mark.image]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from conftest import UserBox


@pytest.fixture
def box(user_image: str, user_box: Callable[..., UserBox]) -> Iterator[UserBox]:
    b = user_box()
    yield b
    name = f"agentbox-{b.key}"
    podman(b, "pod", "rm", "--force", "--ignore", name)
    for volume in podman(b, "volume", "ls", "--format", "{{.Name}}").split():
        if volume.endswith(f"-{name}"):
            podman(b, "volume", "rm", "--force", volume)


def podman(box: UserBox, *args: str) -> str:
    argv = ["runuser", "-u", box.user, "--", *box.env(), "podman", *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/tmp",
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr[-3000:]}"
    return done.stdout


def render(box: UserBox, script: str) -> Path:
    """``agentbox kube`` of ``sh -c script``, written into the project as the user."""
    out = box.run("kube", "--format", "pod", "--", "/bin/sh", "-c", script)
    assert out.returncode == 0, out.stderr
    path = box.project / "sandbox.yaml"
    text = out.stdout
    if limits_unsupported(box):
        text = without_limits(text)
    path.write_text(text)
    return path


def podman_version(box: UserBox) -> tuple[int, ...]:
    text = podman(box, "version", "--format", "{{.Client.Version}}").strip()
    return tuple(int(p) for p in text.split("-")[0].split(".")[:2])


def limits_unsupported(box: UserBox) -> bool:
    """Rootless Podman on cgroups v1 cannot apply resource limits: ``podman run --memory``
    says "Resource limits are not supported and ignored on cgroups V1 rootless systems" and
    runs, but Podman 4.3's ``kube play`` passes them to the runtime, which fails ("cannot set
    memory limit: container could not join or create cgroup"). A host quirk, not one of the
    Pod (cgroups v2 hosts, and every cluster node, apply them)."""
    version = podman(box, "info", "--format", "{{.Host.CgroupsVersion}}").strip()
    return version == "v1"


def without_limits(text: str) -> str:
    docs = list(yaml.safe_load_all(text))
    for doc in docs:
        if doc["kind"] == "Pod":
            for container in doc["spec"]["containers"]:
                container.pop("resources", None)
    return yaml.safe_dump_all(docs, sort_keys=False)


def play(box: UserBox, manifest: Path) -> tuple[int, str]:
    """Play ``manifest``, wait for the task container; its exit status and its output."""
    podman(box, "kube", "play", "--userns", "keep-id", str(manifest))
    task = f"agentbox-{box.key}-task"
    status = podman(box, "wait", task).strip()
    logs = subprocess.run(["runuser", "-u", box.user, "--", *box.env(), "podman", "logs", task],
                          capture_output=True, text=True, check=False, cwd="/tmp")  # fmt: skip
    inspected = podman(box, "container", "inspect", "--format", "{{.State.ExitCode}}", task)
    assert inspected.strip() == status
    return int(status), logs.stdout + logs.stderr


def test_a_played_pod_runs_as_the_user_with_a_nix_daemon_and_keeps_the_store(
    box: UserBox,
) -> None:
    first = render(box, (
        # no wait for the daemon here: the guest init's wrappers do it (the task runs as the
        # user, beside the nix-daemon container that starts with it)
        "set -eu; id -u > /workspace/uid; touch /workspace/made-inside; echo agentbox-kube > "
        "/tmp/f; nix-store --add /tmp/f > /workspace/store-path; exit 7"
    ))  # fmt: skip
    docs = list(yaml.safe_load_all(first.read_text()))
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim"] * 3 + ["Pod"]
    status, logs = play(box, first)
    assert status == 7, logs
    assert (box.project / "uid").read_text().strip() == str(box.pw.pw_uid)
    assert (box.project / "made-inside").stat().st_uid == box.pw.pw_uid
    store_path = (box.project / "store-path").read_text().strip()
    assert store_path.startswith("/nix/store/"), logs
    assert store_path.endswith("-f"), store_path
    podman(box, "kube", "down", str(first))
    assert not podman(box, "pod", "ps", "--quiet", "--filter", f"name=agentbox-{box.key}")

    second = render(box, f"test -e {store_path} && nix-store --verify-path {store_path}")
    if podman_version(box) < (4, 4):
        # Podman 4.3 refuses a claim whose volume exists ("volume with name ... already
        # exists", podman#16348; 4.4 reuses it, podman#16420): the claims were made by the
        # first play, so the Pod is played alone, as `kubectl apply` leaves them unchanged
        pod = [d for d in yaml.safe_load_all(second.read_text()) if d["kind"] == "Pod"]
        second.write_text(yaml.safe_dump_all(pod, sort_keys=False))
    status, logs = play(box, second)
    assert status == 0, logs
    podman(box, "kube", "down", str(second))
    left = podman(box, "ps", "--all", "--quiet", "--filter", f"name=agentbox-{box.key}")
    pods = podman(box, "pod", "ps", "--quiet", "--filter", f"name=agentbox-{box.key}")
    assert (left, pods) == ("", "")
