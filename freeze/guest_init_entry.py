"""PyInstaller's entry script for the frozen guest init (both names, one bundle)."""

import sys

from agentbox_guest_init.main import entry

sys.exit(entry())
