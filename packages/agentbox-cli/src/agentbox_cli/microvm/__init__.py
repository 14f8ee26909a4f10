"""``agentbox microvm``: the direct-libkrun runtime (loftd's) with agentbox's contract."""
