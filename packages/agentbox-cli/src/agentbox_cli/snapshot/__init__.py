"""``agentbox snapshot``: copy-on-write snapshots of a project's persistent state."""
