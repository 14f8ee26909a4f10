"""Command-line parsing shared by the ``agentbox`` and ``loftd`` command lines.

Global flags may be given before or after the verb (``agentbox --debug paths`` is
``agentbox paths --debug``): the top-level parser holds them with real defaults and every verb's
parser holds them again with suppressed defaults, so a flag given after the verb wins and one
given before it survives.
"""

from __future__ import annotations

import argparse

from agentbox_state.errors import UsageError
from agentbox_state.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error raises :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"see '{self.prog} --help'")


def add_global_flags(parser: argparse.ArgumentParser, *, image_env: str, top: bool) -> None:
    """The flags every verb accepts. ``top`` is True only for the top-level parser."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("global options (before or after the verb)")
    group.add_argument(
        "--image", metavar="REF", default=default(None),
        help=f"container image to use, exactly as given (env: {image_env})",
    )  # fmt: skip
    group.add_argument(
        "--pull-latest", action="store_true", default=default(False),
        help="pull the newest published image first (not with --image)",
    )  # fmt: skip
    group.add_argument(
        "--debug", action="store_true", default=default(False),
        help="log every command as a line you can paste; tracebacks on errors",
    )  # fmt: skip
    group.add_argument(
        "--profile", action="store_true", default=default(False),
        help="time each phase; the report is printed when --debug is also given",
    )  # fmt: skip
    group.add_argument(
        "--root", action="store_true", default=default(False),
        help="keep the final shell as root inside the sandbox",
    )  # fmt: skip
    group.add_argument(
        "--dry-run", action="store_true", default=default(False),
        help="print the launch plan and run nothing",
    )  # fmt: skip


class Setting(Record):
    """An effective value and where it came from (``default``, ``flag --x``, ``env X``, a file)."""

    __slots__ = ("source", "value")
    value: object
    source: str

    def __init__(self, value: object, source: str) -> None:
        self._set(value=value, source=source)


class GlobalFlags(Record):
    """The global options after combining flags and environment."""

    __slots__ = ("debug", "dry_run", "image", "profile", "pull_latest", "root")
    image: Setting
    pull_latest: bool
    debug: bool
    profile: bool
    root: bool
    dry_run: bool

    def __init__(
        self,
        *,
        image: Setting,
        pull_latest: bool,
        debug: bool,
        profile: bool,
        root: bool,
        dry_run: bool,
    ) -> None:
        self._set(
            image=image,
            pull_latest=pull_latest,
            debug=debug,
            profile=profile,
            root=root,
            dry_run=dry_run,
        )

    def settings(self) -> dict[str, Setting]:
        def flag(name: str, value: bool) -> Setting:
            return Setting(value, f"flag --{name}" if value else "default")

        return {
            "image": self.image,
            "pull_latest": flag("pull-latest", self.pull_latest),
            "debug": flag("debug", self.debug),
            "profile": flag("profile", self.profile),
            "root": flag("root", self.root),
            "dry_run": flag("dry-run", self.dry_run),
        }


def resolve_global_flags(
    ns: argparse.Namespace, environ: Mapping[str, str], *, image_env: str, default_image: str
) -> GlobalFlags:
    """Combine parsed flags with the environment; ``--image`` and ``--pull-latest`` exclude.

    With neither ``--image`` nor the environment variable, the image is ``None``: it is chosen
    at launch (``default_image`` says how, for the config report).
    """
    if ns.image is not None:
        image = Setting(ns.image, "flag --image")
        if not ns.image:
            raise UsageError("--image is empty", hint="give an image reference or drop --image")
    elif image_env in environ:
        image = Setting(environ[image_env], f"env {image_env}")
        if not environ[image_env]:
            raise UsageError(
                f"{image_env} is set but empty",
                hint=f"set {image_env} to an image reference, or unset it",
            )
    else:
        image = Setting(None, f"default: {default_image}")
    if ns.pull_latest and image.value is not None:
        raise UsageError(
            f"--pull-latest cannot be combined with an explicit image ({image.source})",
            hint="--pull-latest pulls the published image; drop it, or drop the explicit image",
        )
    return GlobalFlags(
        image=image,
        pull_latest=ns.pull_latest,
        debug=ns.debug,
        profile=ns.profile,
        root=ns.root,
        dry_run=ns.dry_run,
    )
