"""``snapshot``: copy-on-write snapshots of a project's persistent state, the same verb in
``agentbox`` and ``loftd``. Each app hands it, as ``hooks.StateHooks``, what its runs hold and
record in a state dir beyond the disks' leases."""
