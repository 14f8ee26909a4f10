"""The direct-libkrun task runtime, shared by `agentbox microvm` and `loftd`: what a run starts
from, the app's contract (``Face``) and the user's request (``TaskRequest``).

A run reads like container mode's: ``loftd.facts.probe_host`` (libkrun found, the image's digest
and cache entry, the task root backends this host can use) → ``loftd.plan.plan_task`` (pure: a
frozen ``TaskPlan`` whose ``describe()`` is what ``--dry-run`` prints) →
``loftd.execute.execute`` (the kvm check, ingest on a miss, the task root, disks, launch.conf,
the helper, the guest's verdict; cleanup always). Each phase is named in the profile and in the
error that ends a run.

The runtime knows no app by name: each app hands it its names, guest init, disks, guest
environment and the libkrun calls it wants, as data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agentbox_state.errors import AgentboxError
from agentbox_state.profile import Profiler
from agentbox_storage.backends import Backend
from agentbox_storage.disks import DiskSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Face:
    """What makes the runtime one app: its names, guest init and contract with it."""

    name: str  # for messages and the profile title
    library_env: str  # the variable that may name the libkrun library
    env_prefix: str  # the guest init's contract prefix (and the kvm check's opt-out)
    guest_init: str  # path inside the image, e.g. bin/agentbox-guest-init
    guest_argv: tuple[str, ...]  # argv before the user's command
    disks: tuple[DiskSpec, ...]  # persistent disks in the workspace state dir, in order
    # the workspace: shared over virtiofs with this tag, announced to the guest in this
    # variable; without a tag the helper bind-mounts it into the root at /workspace
    workspace_tag: str | None = None
    workspace_tag_env: str | None = None
    # the request's other host dirs (``TaskRequest.shares``), with a workspace tag: shared over
    # virtiofs too and announced to the guest in this variable (a JSON list of [tag, target,
    # readonly]); without a tag they are bind-mounted into the root like the workspace
    shares_env: str | None = None
    guest_env: tuple[str, ...] = ()  # the app's own contract (disks, features), after the rest
    # /nix as a kernel overlay on the host, mounted by the helper on the task root's /nix (the
    # image's /nix below, a persistent upper in this dir of the workspace state); None: the guest
    # makes its own /nix (from a disk, say)
    nix_overlay_dir: str | None = None
    init_log: bool = False  # krun_init_log rather than krun_set_log_level
    nested_virt: bool = False  # ask krun_check_nested_virt, enable when supported


@dataclass(frozen=True, slots=True)
class Share:
    """A host dir the guest sees at ``target`` (absolute) besides the workspace."""

    source: Path
    target: str
    readonly: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRequest:
    image: str
    backend: Backend
    workspace: Path
    state_dir: Path  # the workspace's own dir
    images_dir: Path  # the per-user image cache
    task_id: str
    command: tuple[str, ...]
    uid: int
    gid: int
    ram_mib: int
    vcpus: int
    root: bool = False
    preserve: bool = False
    pull: str = "never"  # Buildah's policy: never, missing, or always (ingest even on a hit)
    guest_init_override: Path | None = None
    shares: tuple[Share, ...] = ()  # more host dirs for the guest (an agent's git dir)
    profile: bool = False  # with debug: the guest init prints its own profile report
    debug: bool = False


class PhaseError(AgentboxError):
    pass


@contextmanager
def phase(profiler: Profiler, name: str, label: str) -> Iterator[None]:
    """A profiled phase; an error says which phase failed."""
    with profiler.phase(name):
        try:
            yield
        except PhaseError:
            raise
        except AgentboxError as err:
            raise PhaseError(f"{label} failed: {err.message}", hint=err.hint) from err
