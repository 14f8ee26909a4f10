"""agentbox's Podman and Buildah layer: typed command builders and their execution."""

__version__ = "0.1.0"
