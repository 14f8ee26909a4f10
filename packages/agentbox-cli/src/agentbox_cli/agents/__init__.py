"""Parallel agents of one project: ``--agent NAME`` and ``agentbox agents``."""
