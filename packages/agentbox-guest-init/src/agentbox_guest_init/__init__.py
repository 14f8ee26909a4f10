"""The first process inside an agentbox guest (standard library only)."""

__version__ = "0.1.0"
