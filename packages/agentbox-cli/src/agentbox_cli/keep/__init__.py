"""``agentbox disks``, ``agentbox gc`` and ``agentbox forget``: what agentbox keeps on disk."""
