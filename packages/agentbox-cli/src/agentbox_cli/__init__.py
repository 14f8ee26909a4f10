"""The ``agentbox`` command line."""

__version__ = "0.1.0"
