"""Errors of the Podman/Buildah layer."""

from __future__ import annotations

from agentbox_state.errors import AgentboxError


class PodmanError(AgentboxError):
    """A Podman or Buildah operation failed or its answer could not be understood."""
