"""The image-cache ingest child:
``python -m loftd.ingest [--debug] REF CACHE_ROOT EXPECTED GUEST_INIT [PULL]``.

Run inside ``buildah unshare`` (rootless) so that one user namespace holds the whole
transaction: buildah from, digest, mount, copy into the cache, validate, publish, unmount,
remove. Prints the digest on stdout. Wires agentbox-podman's Buildah image source into
agentbox-storage's cache, which do not know each other. With ``--debug`` every Buildah command
gets Buildah's ``--log-level=debug``, each is echoed to stderr as ``+ LINE``, and a failure
comes with its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from agentbox_podman.buildah import BuildahImageSource
from agentbox_state.cli.outcome import failure
from agentbox_state.runner import SubprocessRunner
from agentbox_storage.imagecache import ImageCache


def ingest_argv(
    prefix: list[str],
    python: str,
    cache_root: Path,
    guest_init: str,
    pull: str = "never",
    *,
    debug: bool = False,
) -> Callable[[str, str | None], list[str]]:
    """The ``ingest_argv`` callback for ``ImageCache.ensure``: this module as a child process,
    behind ``prefix`` (``agentbox_podman.buildah.unshare(debug=...)`` when rootless, nothing
    as root); ``pull`` is Buildah's pull policy for the image (never, missing, always);
    ``debug`` is ``--debug`` for the child (Buildah's ``--log-level=debug``)."""
    flags = ["--debug"] if debug else []

    def build(ref: str, expected: str | None) -> list[str]:
        return [*prefix, python, "-m", "loftd.ingest", *flags, ref, os.fspath(cache_root),
                expected or "", guest_init, pull]  # fmt: skip

    return build


def _echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    debug = args[:1] == ["--debug"]
    args = args[1:] if debug else args
    if len(args) not in (4, 5):
        print("usage: python -m loftd.ingest [--debug] REF CACHE_ROOT EXPECTED_DIGEST GUEST_INIT "
              "[PULL]", file=sys.stderr)  # fmt: skip
        return 2
    ref, cache_root, expected, guest_init = args[:4]
    pull = args[4] if len(args) == 5 else "never"
    runner = SubprocessRunner(os.environ, echo=_echo if debug else None)
    try:
        entry = ImageCache(Path(cache_root)).ingest(
            ref, BuildahImageSource(runner, pull=pull, debug=debug), runner,
            guest_init=guest_init, expected=expected or None,
        )  # fmt: skip
    except BaseException as err:  # noqa: BLE001 - a child process: report and exit
        code, text = failure("loftd ingest", err, debug=debug)
        print(text, file=sys.stderr)
        return code
    print(entry.digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
