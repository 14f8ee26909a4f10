"""Errors of the storage layer."""

from __future__ import annotations

from agentbox_state.errors import AgentboxError


class StorageError(AgentboxError):
    """A disk, task root or image cache operation failed or was refused."""
