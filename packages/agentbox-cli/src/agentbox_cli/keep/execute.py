"""Carrying out a ``GcPlan`` or a ``ForgetPlan`` through the lower packages' own removers: task
roots by ``taskroot.collect_garbage`` (which takes each task's lock again first), staging by
``clean_staging``, entries under their digest lock, sidecars by container mode's
``remove_if_idle``; a stale lease record is cleared by taking its lock and letting go."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from agentbox_cli.keep.plan import ENTRY, LEASE, SIDECAR, STAGING, TASK, ForgetPlan, GcItem, GcPlan
from agentbox_state.errors import AgentboxError
from agentbox_state.lock import FileLock
from agentbox_state.runner import Runner
from agentbox_storage import argv, taskroot
from agentbox_storage.imagecache import ImageCache

Say = Callable[[str], None]


def _sidecar(item: GcItem, runner: Runner, *, rootless: bool, debug: bool) -> str:
    from agentbox_cli.container import sidecar
    from agentbox_cli.container.plan import plan_sidecar

    state_dir = item.path.parent.parent  # <state>/nix/merged
    plan = plan_sidecar(item.detail, state_dir.name, state_dir, rootless=rootless, debug=debug)
    return sidecar.remove_if_idle(plan, state_dir, runner)


def execute_gc(plan: GcPlan, runner: Runner, images: Path, *, userns: Sequence[str],
               rootless: bool, debug: bool, warn: Say) -> list[GcItem]:  # fmt: skip
    """Remove the plan's items; returns those removed (a failure is a warning, the rest go
    on)."""
    done: list[GcItem] = []
    tasks = [i for i in plan.items if i.kind == TASK]
    for tasks_dir in sorted({i.path.parent for i in tasks}):

        def failed(path: Path, err: AgentboxError) -> None:
            warn(f"could not remove {path}: {err.message}" + (f" ({err.hint})" if err.hint else ""))

        removed = set(taskroot.collect_garbage(
            tasks_dir, runner, userns=userns, min_age=0.0, on_error=failed,
            only={i.path for i in tasks if i.path.parent == tasks_dir},
        ))  # fmt: skip
        done += [i for i in tasks if i.path in removed]
    cache = ImageCache(images)
    if any(i.kind == STAGING for i in plan.items):
        removed = set(cache.clean_staging(runner, userns=userns))
        done += [i for i in plan.items if i.kind == STAGING and i.path in removed]
    for item in plan.items:
        try:
            if item.kind == ENTRY:
                cache.remove_entry(item.detail, runner, userns=userns)
            elif item.kind == SIDECAR:
                outcome = _sidecar(item, runner, rootless=rootless, debug=debug)
                if outcome != "removed":
                    warn(f"the Nix sidecar at {item.path} stays: {outcome}")
                    continue
            elif item.kind == LEASE:
                lock = FileLock(item.path, what=str(item.path))
                lock.acquire(create=False)  # ours now: releasing truncates the stale record
                lock.release()
            else:
                continue
        except AgentboxError as err:
            warn(f"could not remove {item.path}: {err.message}")
            continue
        done.append(item)
    return done


def execute_forget(plan: ForgetPlan, runner: Runner, *, userns: Sequence[str], rootless: bool,
                   debug: bool) -> None:  # fmt: skip
    """Stop the project's idle sidecar, unmount and remove its task roots, then its state dir."""
    project = plan.project
    if project.sidecar is not None:
        item = GcItem(kind=SIDECAR, path=project.sidecar.merged, reason="", size=0,
                      detail=project.sidecar.image)  # fmt: skip
        outcome = _sidecar(item, runner, rootless=rootless, debug=debug)
        if outcome != "removed":
            raise AgentboxError(
                f"the Nix sidecar {project.sidecar.name} of this project could not be removed "
                f"({outcome}); nothing else was removed",
                hint="wait for its tasks to end (podman ps shows them) and retry",
            )
    tasks = project.state_dir / "tasks"
    if tasks.is_dir():
        taskroot.collect_garbage(tasks, runner, userns=userns, include_preserved=True)
    runner.run(argv.remove_tree(project.state_dir, userns))
