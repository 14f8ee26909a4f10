"""How big a libkrun VM is: the ``--mem`` grammar and the vCPU rule, shared by every libkrun mode.

Kept free of heavy imports: the command lines use it before they decide to run anything.
"""

from __future__ import annotations

from agentbox_state.errors import UsageError

MAX_MEM_GIB = (2**32 - 1) // 1024  # libkrun takes the RAM in MiB as a uint32


def vcpus(total: int) -> int:
    """All CPUs up to 6; beyond that, all but 2 (for the host)."""
    return total if total <= 6 else total - 2


def parse_mem(text: str) -> int:
    """``--mem``: whole GiB, 1 to MAX_MEM_GIB, no unit."""
    if not text.isdigit() or not text.isascii() or int(text) == 0 or int(text) > MAX_MEM_GIB:
        raise UsageError(
            f"invalid --mem {text!r}",
            hint=f"give a whole number of GiB from 1 to {MAX_MEM_GIB}, without a unit",
        )
    return int(text)
