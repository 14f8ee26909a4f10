"""What the guest init reported from inside the VM, and what the run's exit status then means.

The guest init writes one line to a file of the task root (its ``*_GUEST_STATUS_FILE``):
``started`` just before the command runs, ``exited N`` once it ended with N, ``failed N`` when
the guest init itself failed first. libkrun ends the helper with the guest's status when the guest
ran, but also with its own (1, say) when the VM stopped early: only the report tells them apart.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from agentbox_state.errors import AgentboxError

STATUS_PATH = "/.agentbox-task/guest.status"  # inside the guest (the task root)


class VmStoppedError(AgentboxError):
    """The VM ended without the guest init saying how the command ended."""


@dataclass(frozen=True, slots=True)
class Report:
    state: str  # missing, started, exited, failed, or unreadable
    status: int | None = None
    text: str = ""


def status_file(rootfs: Path) -> Path:
    """Where the host finds the report (pure)."""
    return rootfs / STATUS_PATH.lstrip("/")


def parse(text: str | None) -> Report:
    """The report in ``text`` (None: there is no file) (pure)."""
    if text is None:
        return Report("missing")
    word, _, number = text.strip().partition(" ")
    if word == "started" and not number:
        return Report("started")
    if word in ("exited", "failed") and number.isdigit() and number.isascii():
        return Report(word, int(number))
    return Report("unreadable", text=text.strip()[:80])


def read(rootfs: Path) -> Report:
    try:
        return parse(status_file(rootfs).read_text(encoding="ascii", errors="replace"))
    except FileNotFoundError:
        return parse(None)
    except OSError as err:
        return Report("unreadable", text=f"{err.strerror or err}")


def _libkrun_status(code: int) -> str:
    if code > 128:
        try:
            return f"libkrun's process was killed by {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"exit {code} from libkrun"


def verdict(name: str, report: Report, code: int, *, preserve: bool) -> int:
    """The guest command's exit status, or ``VmStoppedError`` saying why there is none."""
    if report.state == "exited" and report.status is not None:
        return report.status
    keep = "" if preserve else "; --preserve-debug keeps the task root for a look"
    if report.state == "failed":
        raise VmStoppedError(
            f"{name}: the guest init failed before the command ran (exit {report.status})",
            hint="its own message is above" + keep,
            exit_code=report.status or 1,
        )
    if report.state == "started":
        message = (f"{name}: the VM stopped while the command was running "
                   f"({_libkrun_status(code)}); the command's own status is unknown")  # fmt: skip
    elif report.state == "missing":
        message = f"{name}: the VM stopped before the guest started ({_libkrun_status(code)})"
    else:
        where = os.path.relpath(STATUS_PATH, "/")
        message = (f"{name}: the guest's report ({where} in the task root) is unreadable: "
                   f"{report.text!r} ({_libkrun_status(code)})")  # fmt: skip
    raise VmStoppedError(
        message,
        hint="libkrun's and the guest's own messages, if any, are above; rerun with --debug for "
        "more" + keep,
        exit_code=code or 1,
    )
