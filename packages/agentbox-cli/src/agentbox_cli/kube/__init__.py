"""``agentbox kube``: container mode's plan rendered as Kubernetes objects instead of run."""

# what --format and --workspace accept: the verb's completion and render's validation
FORMATS = ("pod", "sandbox", "template")
WORKSPACES = ("hostpath", "pvc", "git")
