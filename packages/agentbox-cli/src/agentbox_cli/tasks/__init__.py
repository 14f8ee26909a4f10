"""``agentbox ps``, ``stop TASK`` and ``kill TASK``: the running tasks of this user, found from
Podman's labels and the VM tasks' locks (``inventory``), printed or signalled by the verbs
(``verb``)."""
