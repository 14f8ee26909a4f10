"""The command-line scaffolding both ``agentbox`` and ``loftd`` are built on.

Printing is injected (``out``/``err`` sinks), so nothing here writes to a terminal by itself; the
console-script modules of the CLI packages own stdout, stderr and the exit status.
"""
