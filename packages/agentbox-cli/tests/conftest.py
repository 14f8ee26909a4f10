"""agentbox-cli's test helpers (kube_schema) importable by name from its tests.

pytest runs with ``--import-mode=importlib``, which puts no test directory on ``sys.path``; this
puts this one there, as pytest's ``pythonpath`` setting would (mypy finds the helpers through
MYPYPATH, which the types session sets to this directory).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = os.fspath(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
