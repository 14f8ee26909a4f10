"""agentbox's base layer.

Import the submodules you need (``agentbox_state.paths``, ``agentbox_state.runner``...): this
package's ``__init__`` stays empty on purpose so that a CLI's start-up pays only for what it uses.
"""

__version__ = "0.1.0"
