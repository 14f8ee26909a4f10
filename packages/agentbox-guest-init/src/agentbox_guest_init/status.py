"""Background preparation status files: ``/run/agentbox/<name>.status`` (key=value lines).

States move only not-started -> running -> ready | failed; updates hold ``<name>.lock``."""

from __future__ import annotations

import fcntl
import os
import time

STATES = ("not-started", "running", "ready", "failed")
NEXT = {"not-started": ("running",), "running": ("ready", "failed"), "ready": (), "failed": ()}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append("\n" if value[i + 1] == "n" else value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def render(fields: dict[str, str]) -> str:
    return "".join(f"{k}={_escape(v)}\n" for k, v in fields.items())


def parse(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = _unescape(value)
    return fields


class StatusFile:
    def __init__(self, run_dir: str, name: str) -> None:
        self.path = os.path.join(run_dir, f"{name}.status")
        self.lock_path = os.path.join(run_dir, f"{name}.lock")
        self.log_path = os.path.join(run_dir, f"{name}.log")

    def read(self) -> dict[str, str]:
        try:
            with open(self.path, encoding="utf-8") as f:
                return parse(f.read())
        except FileNotFoundError:
            return {"state": "not-started"}

    def transition(self, to: str, *, pid: int | None = None, error: str = "") -> bool:
        """Move to ``to`` if that is legal from the current state (and, leaving running, only
        for the pid that set it); returns whether it moved."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            deadline = time.monotonic() + 5
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.02)
            current = self.read()
            if to not in NEXT.get(current.get("state", "not-started"), ()):
                return False
            if current.get("state") == "running" and pid is not None and \
                    current.get("pid") != str(pid):  # fmt: skip
                return False
            fields = {"state": to, "pid": str(pid or os.getpid()), "log_path": self.log_path}
            now = str(int(time.time()))
            if to == "running":
                fields["started_at"] = now
            else:
                fields["started_at"] = current.get("started_at", now)
                fields["finished_at"] = now
            if error:
                fields["error"] = error
            tmp = f"{self.path}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(render(fields))
            os.replace(tmp, self.path)
            return True
        finally:
            os.close(fd)

    def wait(self, timeout: float = 120.0, poll: float = 0.05) -> dict[str, str]:
        """Block until ready or failed (or ``timeout``); returns the last status read."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.read()
            if fields.get("state") in ("ready", "failed") or time.monotonic() > deadline:
                return fields
            time.sleep(poll)
