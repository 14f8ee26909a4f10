"""agentbox's libkrun layer: a ctypes binding to libkrun and the launch helper."""

__version__ = "0.1.0"
