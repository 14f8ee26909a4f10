"""The ``loftd`` console script."""

from __future__ import annotations

from agentbox_state.cli.console import console_main
from agentbox_state.cli.verbs import COMPLETION, CONFIG, PATHS
from loftd.launch import INTERNAL, LAUNCH
from loftd.schema import SPEC

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

VERBS = (LAUNCH, PATHS, CONFIG, COMPLETION, INTERNAL)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    return console_main(SPEC, VERBS, argv, environ)
