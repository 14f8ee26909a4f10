"""Image references agentbox knows by name."""

from __future__ import annotations

LOCAL_IMAGE = "localhost/agentbox:latest"
PUBLISHED_IMAGE = "ghcr.io/zeroqn/agentbox:latest"
