"""loftd: the direct-libkrun task runtime as a library, and its command line."""

__version__ = "0.1.0"
