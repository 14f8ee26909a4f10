"""The guest's report to the host in the VM modes: one line in a file of the task root.

``started`` is written once the guest is prepared, just before the command runs; ``exited N``
once it has ended with status N; ``failed N`` when the guest init itself failed first. The host
reads the file after the VM is gone: no file means the VM stopped before the guest init got that
far, ``started`` that it stopped while the command ran.
Each write replaces the file whole (rename), so the host never reads half a line.
"""

from __future__ import annotations

import os
import sys

STARTED = "started"


def exited(status: int) -> str:
    return f"exited {status}"


def failed(code: int) -> str:
    """The guest init itself failed (exit ``code``) before the command ran."""
    return f"failed {code}"


def write(path: str, line: str, prog: str) -> bool:
    """Replace ``path`` with ``line``; on failure say so (the command still runs) and False."""
    tmp = f"{path}.tmp"
    try:
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        with open(tmp, "w", encoding="ascii") as f:
            f.write(line + "\n")
        os.replace(tmp, path)
    except OSError as err:
        print(f"{prog}: cannot write the status file {path} for the host: {err}", file=sys.stderr)
        return False
    return True
