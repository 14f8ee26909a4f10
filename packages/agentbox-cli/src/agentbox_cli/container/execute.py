"""Container mode's plan carried out: the sidecar reused or its overlay mounted, the task run
while a new sidecar container starts beside it (one background worker, once the task has run
``SIDECAR_DEFER_SECONDS``: a shorter task starts none), and the sidecar's idle removal arranged
whatever happens to the task."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from agentbox_cli.container import imagefacts, sidecar
from agentbox_cli.container.plan import SIDECAR_DEFER_SECONDS, ContainerPlan, SidecarPlan
from agentbox_cli.container.storage_check import vfs_warning
from agentbox_state.errors import AgentboxError
from agentbox_state.lock import FileLock
from agentbox_state.profile import Profiler
from agentbox_state.runner import Runner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from concurrent.futures import Future

Say = Callable[[str], None]  # one line to stdout or stderr
SETUP_WAIT_SECONDS = 120


def run_task(plan: ContainerPlan, runner: Runner, *, cache: imagefacts.FactsCache | None,
             vfs_marker: Path, profiler: Profiler, err: Say) -> int:  # fmt: skip
    """Run the task; its exit status. A sidecar that fails to start beside it is reported
    after the task (whose first use of Nix then says the daemon never came)."""

    def say(message: str) -> None:
        err(f"agentbox: {message}")

    state_dir = plan.sidecar.state_file.parent
    setup, users = sidecar.setup_lock(state_dir), sidecar.users_lock(state_dir)
    starting: Future[bool] | None = None
    task_ended = threading.Event()
    with profiler.phase("sidecar"):
        setup.acquire(wait=SETUP_WAIT_SECONDS, on_wait=say)
        try:
            prepared = sidecar.ensure(plan.sidecar, runner, say=say, cache=cache)
            _warn_about_storage(prepared, vfs_marker, err)
            for d in plan.host_dirs:
                d.mkdir(parents=True, exist_ok=True)
            users.acquire(shared=True)
            if prepared.facts is not None and plan.nix_daemon:  # beside the task; it releases setup
                starting = _start_beside(plan.sidecar, runner, prepared.facts, setup,
                                         task_ended)  # fmt: skip
            elif prepared.facts is not None:
                sidecar.defer(plan.sidecar)  # none for this task; the overlay is kept
        finally:
            if starting is None:
                setup.release()
    try:
        with profiler.phase("task"):
            task = plan.task_for(daemon_starting=starting is not None)
            try:
                with _egress(plan, runner):
                    status = runner.interactive(task.argv())
            finally:
                task_ended.set()
        if plan.denial_log is not None:
            from agentbox_cli.egress.serve import denials

            denied = denials(plan.denial_log)
            if denied is not None:
                say(denied)
        failed = starting.exception() if starting is not None else None
        if isinstance(failed, AgentboxError):
            say(failed.message)
            if failed.hint:
                err(f"hint: {failed.hint}")
            return status or 1
        if failed is not None:
            raise failed
        return status
    finally:
        if starting is not None:
            starting.exception()  # wait for it: the state file must be complete before removal
        users.release()
        outcome = None
        if plan.grace == 0:
            outcome = sidecar.remove_if_idle(plan.sidecar, state_dir, runner)
        if outcome not in (sidecar.REMOVED, sidecar.IN_USE):
            sidecar.schedule_removal(state_dir, plan.sidecar, plan.grace, runner)


def start_sidecar(plan: SidecarPlan, runner: Runner, *, cache: imagefacts.FactsCache | None,
                  vfs_marker: Path, out: Say, err: Say) -> int:  # fmt: skip
    """``agentbox container sidecar``: start it (or reuse it) without waiting for its daemon,
    so a broken one can be inspected; prints its name and its socket's host path."""

    def say(message: str) -> None:
        err(f"agentbox: {message}")

    setup = sidecar.setup_lock(plan.state_file.parent)
    setup.acquire(wait=SETUP_WAIT_SECONDS, on_wait=say)
    try:
        prepared = sidecar.ensure(plan, runner, say=say, cache=cache)
        _warn_about_storage(prepared, vfs_marker, err)
        if prepared.facts is not None:
            sidecar.start(plan, runner, prepared.facts)
    finally:
        setup.release()
    out(plan.name)
    out(os.fspath(plan.socket))
    where = ("inside `podman unshare` (the overlay is mounted in rootless Podman's "
             "namespace): `podman unshare ls -l " + os.fspath(plan.socket) + "`"
             if plan.userns else "")  # fmt: skip
    say(
        f"sidecar {plan.name} {prepared.status}; not waited for: its daemon socket is "
        f"{plan.socket}" + (f", {where}" if where else "") + f"; `podman logs {plan.name}` "
        "shows the daemon's output. It keeps running until the next task's idle grace ends"
    )
    return 0


def _egress(plan: ContainerPlan, runner: Runner) -> AbstractContextManager[object]:
    """The task's egress proxy, served while the task runs (nothing without an allow-list)."""
    if plan.egress_dir is None or plan.denial_log is None:
        return nullcontext()
    from agentbox_cli.egress.serve import ProxyThread

    return ProxyThread(plan.network, plan.egress_dir, plan.denial_log, secrets=plan.secrets,
                       ca_dir=plan.ca_dir, tls_dir=plan.tls_dir, runner=runner)  # fmt: skip


def _start_beside(plan: SidecarPlan, runner: Runner, facts: imagefacts.ImageFacts,
                  setup: FileLock, task_ended: threading.Event) -> Future[bool]:  # fmt: skip
    """``sidecar.start`` on a worker thread (the overlay is mounted already, so the task's bind
    mount of it is right) once the task has run ``SIDECAR_DEFER_SECONDS``, so it does not
    compete with the task's own start; a task that ended before starts none and the overlay
    stays mounted for the next (``sidecar.defer``). True when it started; ``setup`` is released
    when it is done, whatever the outcome."""
    from concurrent.futures import ThreadPoolExecutor

    def start() -> bool:
        try:
            if task_ended.wait(SIDECAR_DEFER_SECONDS):
                sidecar.defer(plan)
                return False
            sidecar.start(plan, runner, facts)
            return True
        finally:
            setup.release()

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nix-sidecar-start")
    started = pool.submit(start)
    pool.shutdown(wait=False)  # no more work: its one thread ends with the start
    return started


def _warn_about_storage(prepared: sidecar.Prepared, marker: Path, err: Say) -> None:
    """The one-time vfs warning, from the inspect the cold start made anyway."""
    warning = vfs_warning(prepared.facts.driver, marker) if prepared.facts is not None else None
    if warning:
        err(warning)
