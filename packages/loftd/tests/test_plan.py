"""The direct-libkrun runtime's plan (pure, from facts written out here) and the start of its
execution against a recording runner: no root, no libkrun, no Buildah."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from agentbox_krun import launchconf
from agentbox_krun.kvm import KvmFacts, KvmUnavailableError
from agentbox_state.errors import AgentboxError
from agentbox_state.profile import Profiler
from agentbox_state.testing import RecordingRunner
from agentbox_storage.backends import Backend
from agentbox_storage.disks import DiskSpec
from agentbox_storage.imagecache import CacheEntry
from loftd.execute import execute
from loftd.face import FACE as LOFTD
from loftd.facts import HostFacts, probe_host
from loftd.plan import plan_task
from loftd.runtime import Face, PhaseError, Share, TaskRequest

HEX = "ab" * 32
DIGEST = f"sha256:{HEX}"
CACHED = f"/s/images/sha256/{HEX}/rootfs"
TASK = "/s/ws/tasks/project-1"
DISK = DiskSpec(file_name="x-nix.raw", label="X_NIX", block_id="x-nix", purpose="the /nix disk")
# an app shaped like `agentbox microvm`: the workspace over virtiofs, a /nix disk
VIRTIOFS = Face(
    name="x vm", library_env="X_LIBKRUN_LIBRARY", env_prefix="X_", guest_init="bin/x-init",
    guest_argv=("x-init", "enter", "--"), disks=(DISK,), workspace_tag="x-workspace",
    workspace_tag_env="X_WORKSPACE_TAG", guest_env=("X_NIX_DISK=1",),
)  # fmt: skip
PVM = KvmFacts(device=True, open_errno=None, cpu_flags=frozenset(),
               modules=frozenset({"kvm", "kvm_pvm"}))  # fmt: skip


def document(doc: dict[str, object]) -> list[str]:
    """launch.conf's JSON as describe() shows it: indented under its path."""
    return [f"  {line}" for line in json.dumps(doc, indent=2).splitlines()]


def request(**changes: object) -> TaskRequest:
    req = TaskRequest(
        image="localhost/x:latest", backend=Backend.AUTO, workspace=Path("/home/u/project"),
        state_dir=Path("/s/ws"), images_dir=Path("/s/images"), task_id="project-1",
        command=("echo", "hi"), uid=0, gid=0, ram_mib=4096, vcpus=2,
    )  # fmt: skip
    return dataclasses.replace(req, **changes)  # type: ignore[arg-type]


def facts(**changes: object) -> HostFacts:
    host = HostFacts(
        library="/usr/lib/libkrun.so.1", python="/usr/bin/python3",
        passthrough=(("RUST_LOG", "debug"),), kvm=None, userns=(), current=DIGEST,
        cached=CacheEntry(DIGEST, Path(f"/s/images/sha256/{HEX}")),
        backends=(Backend.BTRFS_SNAPSHOT, Backend.FUSE_OVERLAY),
    )  # fmt: skip
    return dataclasses.replace(host, **changes)  # type: ignore[arg-type]


def test_a_cache_hit_as_root_with_the_workspace_over_virtiofs() -> None:
    plan = plan_task(VIRTIOFS, request(), facts())
    assert plan.ingest is None
    assert list(plan.helper_argv) == [
        "/usr/bin/python3", "-m", "agentbox_krun.enter", "X_LIBKRUN_LIBRARY",
        f"{TASK}/launch.conf",
    ]  # fmt: skip
    assert plan.describe() == [
        "x vm: task project-1, image localhost/x:latest",
        "kvm: not checked (X_SKIP_KVM_CHECK=1)",
        f"image cache: hit: {CACHED}",
        f"task root: btrfs-snapshot at {TASK}/rootfs-btrfs-snapshot, else fuse-overlay (from "
        f"{CACHED})",
        "guest init: /bin/x-init in the task root",
        "disk x-nix: /s/ws/x-nix.raw (the /nix disk; made sparse 64GiB btrfs if missing; leased)",
        f"{TASK}/launch.conf (the task root and guest init as found once made):",
        *document(
            {
                "task_rootfs": f"{TASK}/rootfs-btrfs-snapshot",
                "ram_mib": 4096,
                "vcpus": 2,
                "workdir": "/workspace",
                "exec_path": "/bin/x-init",
                "argv": ["x-init", "enter", "--", "echo", "hi"],
                "env": [
                    "X_WORKSPACE_TAG=x-workspace",
                    "X_ENTER_AS_ROOT=1",
                    "X_GUEST_STATUS_FILE=/.agentbox-task/guest.status",
                    "X_NIX_DISK=1",
                ],
                "disks": [{"id": "x-nix", "path": "/s/ws/x-nix.raw", "readonly": False}],
                "mounts": [],
                "shares": [],
                "init_log": False,
                "nested_virt": False,
                "workspace_source": "/home/u/project",
                "workspace_tag": "x-workspace",
                "workspace_target": "/workspace",
                "task_lock": f"{TASK}/.task.lock",
                "image": "localhost/x:latest",  # only reported (agentbox ps)
            }
        ),
        "helper: RUST_LOG=debug X_LIBKRUN_LIBRARY=/usr/lib/libkrun.so.1 /usr/bin/python3 -m "
        f"agentbox_krun.enter X_LIBKRUN_LIBRARY {TASK}/launch.conf",
        "then: the guest's report in /.agentbox-task/guest.status tells its status; "
        f"{TASK} is removed",
    ]


def test_loftd_rootless_on_a_miss_ingests_and_grafts_in_buildahs_namespace() -> None:
    unshare = ("buildah", "unshare", "--")
    req = request(image="ghcr.io/x/loftd:latest", uid=1000, gid=1000, pull="missing",
                  backend=Backend.FUSE_OVERLAY, command=(), preserve=True)  # fmt: skip
    host = facts(userns=unshare, current=None, cached=None, backends=(Backend.FUSE_OVERLAY,),
                 kvm=PVM, passthrough=())  # fmt: skip
    plan = plan_task(LOFTD, req, host)
    assert plan.ingest == (
        *unshare, "/usr/bin/python3", "-m", "loftd.ingest", "ghcr.io/x/loftd:latest",
        "/s/images", "", "bin/loftd-guest-init", "missing",
    )  # fmt: skip
    assert plan.helper_argv == (
        *unshare, "/usr/bin/python3", "-m", "agentbox_krun.enter", "LOFTD_LIBKRUN_LIBRARY",
        f"{TASK}/launch.conf",
    )  # fmt: skip
    lower = "/s/images/<ingested digest>/rootfs/nix"
    assert plan.describe() == [
        "loftd: task project-1, image ghcr.io/x/loftd:latest",
        "kvm: checked first: refused: /dev/kvm is served by kvm_pvm, a software hypervisor (no "
        "vmx/svm CPU flag, no kvm_intel/kvm_amd module): it boots no ordinary guest kernel",
        "image cache: miss: buildah unshare -- /usr/bin/python3 -m loftd.ingest "
        "ghcr.io/x/loftd:latest /s/images '' bin/loftd-guest-init missing",
        f"task root: fuse-overlay at {TASK}/rootfs-fuse-overlay (from the ingested image, in "
        "buildah unshare --)",
        "guest init: /bin/loftd-guest-init in the task root",
        "/nix overlay: /s/ws/nix-overlay/lease probed (one task per upper), "
        "/s/ws/nix-overlay/upper and /s/ws/nix-overlay/work made",
        "disk loftd-containers: /s/ws/loftd-containers.raw (loftd's container storage disk; made "
        "sparse 64GiB btrfs if missing; leased)",
        f"{TASK}/launch.conf (the task root and guest init as found once made):",
        *document(
            {
                "task_rootfs": f"{TASK}/rootfs-fuse-overlay",
                "ram_mib": 4096,
                "vcpus": 2,
                "workdir": "/workspace",
                "exec_path": "/bin/loftd-guest-init",
                "argv": ["loftd-guest-init", "enter", "--", "fish", "-l"],
                "env": [
                    "LOFTD_HOST_UID=1000",
                    "LOFTD_HOST_GID=1000",
                    "LOFTD_ENTER_AS_ROOT=1",
                    "LOFTD_GUEST_STATUS_FILE=/.agentbox-task/guest.status",
                    "LOFTD_CONTAINERS_STORAGE=1",
                    "LOFTD_CONTAINERS_DISK_ID=loftd-containers",
                    "LOFTD_CONTAINERS_DISK_LABEL=LOFTD_CONTAINERS",
                    "LOFTD_NIX_HOST_OVERLAY=1",
                ],
                "disks": [
                    {
                        "id": "loftd-containers",
                        "path": "/s/ws/loftd-containers.raw",
                        "readonly": False,
                    }
                ],
                "mounts": [
                    {"source": "/home/u/project", "target": "/workspace", "readonly": False}
                ],
                "shares": [],
                "init_log": True,
                "nested_virt": True,
                "task_lock": f"{TASK}/.task.lock",
                "image": "ghcr.io/x/loftd:latest",
                "nix_overlay": {
                    "lower": lower,
                    "upper": "/s/ws/nix-overlay/upper",
                    "work": "/s/ws/nix-overlay/work",
                    "lease": "/s/ws/nix-overlay/lease",
                },
            }
        ),
        "helper: LOFTD_LIBKRUN_LIBRARY=/usr/lib/libkrun.so.1 buildah unshare -- /usr/bin/python3 "
        f"-m agentbox_krun.enter LOFTD_LIBKRUN_LIBRARY {TASK}/launch.conf",
        "then: the guest's report in /.agentbox-task/guest.status tells its status; "
        f"{TASK} is kept (--preserve-debug)",
    ]


def test_shares_go_over_virtiofs_with_a_tag_and_are_grafted_without_one() -> None:
    """More host dirs (an agent's git dir): with a workspace tag, one virtiofs share each
    (tags after the workspace's) and the guest told in the face's variable, as JSON
    [tag, target, read-only] in order; without one (loftd), bind mounts beside the
    workspace's; a face with a tag and no such variable refuses them."""
    git = (Share(Path("/src/app/.git"), "/src/app/.git", readonly=True),
           Share(Path("/src/app/.git/objects"), "/src/app/.git/objects"))  # fmt: skip
    face = dataclasses.replace(VIRTIOFS, shares_env="X_SHARES")
    launch = plan_task(face, request(shares=git), facts()).launch
    assert launch.shares == (
        launchconf.Share("x-workspace-1", "/src/app/.git", True),
        launchconf.Share("x-workspace-2", "/src/app/.git/objects", False),
    )
    assert launch.env[-1] == ('X_SHARES=[["x-workspace-1","/src/app/.git",true],'
                              '["x-workspace-2","/src/app/.git/objects",false]]')  # fmt: skip
    assert launch.mounts == ()
    grafted = plan_task(LOFTD, request(shares=git), facts()).launch
    assert grafted.shares == ()
    assert grafted.mounts == (
        launchconf.Mount("/home/u/project", "/workspace", False),
        launchconf.Mount("/src/app/.git", "/src/app/.git", True),
        launchconf.Mount("/src/app/.git/objects", "/src/app/.git/objects", False),
    )
    assert not any(e.startswith("LOFTD_SHARES") for e in grafted.env)
    with pytest.raises(AgentboxError, match="x vm cannot share more than the workspace"):
        plan_task(VIRTIOFS, request(shares=git), facts())


def test_a_known_digest_names_the_rootfs_the_ingest_will_make() -> None:
    plan = plan_task(LOFTD, request(), facts(cached=None))
    assert plan.source == Path(CACHED)
    assert plan.nix_overlay is not None
    assert plan.nix_overlay.lower == f"{CACHED}/nix"
    assert plan.ingest == ("/usr/bin/python3", "-m", "loftd.ingest", "localhost/x:latest",
                           "/s/images", "", "bin/loftd-guest-init", "never")  # fmt: skip


def test_the_kvm_check_comes_before_anything(tmp_path: Path) -> None:
    req = request(state_dir=tmp_path / "ws", images_dir=tmp_path / "images")
    plan = plan_task(VIRTIOFS, req, facts(kvm=PVM, cached=None))
    runner = RecordingRunner()
    with pytest.raises(KvmUnavailableError, match=r"^x vm cannot start a VM here: /dev/kvm is "):
        execute(plan, runner, Profiler("test", enabled=False), lambda line: pytest.fail(line))
    assert runner.calls == []
    assert list(tmp_path.iterdir()) == []


def test_a_failed_ingest_ends_the_run_before_any_task_root(tmp_path: Path) -> None:
    req = request(state_dir=tmp_path / "ws", images_dir=tmp_path / "images")
    plan = plan_task(VIRTIOFS, req, facts(cached=None))
    assert plan.ingest is not None
    runner = RecordingRunner()
    runner.script(*plan.ingest, returncode=1, stderr="no such image\nhint: build it first\n")
    with pytest.raises(PhaseError) as caught:
        execute(plan, runner, Profiler("test", enabled=False), lambda line: pytest.fail(line))
    assert (caught.value.message, caught.value.hint) == (
        "x vm image cache ingestion failed: could not add image localhost/x:latest to the image "
        "cache:\n  no such image",
        "build it first",
    )
    assert runner.argvs == [list(plan.ingest)]
    assert not (tmp_path / "ws").exists()


def test_without_libkrun_the_probe_stops_before_asking_anything(tmp_path: Path) -> None:
    runner = RecordingRunner()
    missing = {"X_LIBKRUN_LIBRARY": str(tmp_path / "none.so")}
    with pytest.raises(PhaseError, match=r"^x vm needs libkrun: cannot load libkrun; tried: "):
        probe_host(VIRTIOFS, request(), runner, Profiler("test", enabled=False), environ=missing)
    assert runner.calls == []
