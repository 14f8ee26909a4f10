"""The options every direct-libkrun command line shares (``agentbox microvm``, ``loftd``): one
runtime, one meaning. Kept free of heavy imports (the command lines' help lists them)."""

from __future__ import annotations

from agentbox_state.cli.args import Option

PRESERVE_DEBUG = Option(
    "--preserve-debug", "keep the task root and state, and print how to remove them"
)
MEM = Option("--mem", "VM memory in whole GiB (default 4)", metavar="GIB")
