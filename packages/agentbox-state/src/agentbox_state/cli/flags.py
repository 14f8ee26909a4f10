"""The global options both command lines share, and how they combine with the environment."""

from __future__ import annotations

from agentbox_state.cli.args import Args, Option
from agentbox_state.errors import UsageError
from agentbox_state.record import Record
from agentbox_state.workspace import ALLOW_HOME_FLAG

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


AGENT = Option("--agent", "a named agent of this project: its own git worktree and state",
               metavar="NAME")  # fmt: skip


def global_options(image_env: str, *, agent: bool = False) -> tuple[Option, ...]:
    """The options every verb accepts, before or after the verb (``--agent`` when ``agent``:
    the verbs that take it say so, ``Verb.agent``)."""
    return (
        Option("--image", f"image to use, exactly as given (env: {image_env})", metavar="REF"),
        Option("--pull-latest", "pull the newest published image first (not with --image)"),
        Option("--debug", "log every command as a line you can paste; tracebacks on errors"),
        Option("--profile", "time each phase; the report is printed when --debug is also given"),
        Option("--root", "keep the final shell as root inside the sandbox"),
        Option("--dry-run", "print the launch plan and run nothing"),
        Option(ALLOW_HOME_FLAG, "allow a workspace that is or holds your home (shown whole)"),
        *((AGENT,) if agent else ()),
    )


class Setting(Record):
    """An effective value and where it came from (``default``, ``flag --x``, ``env X``, a file)."""

    value: object
    source: str


class GlobalFlags(Record, kw_only=True):
    """The global options after combining flags and environment."""

    image: Setting
    pull_latest: bool
    debug: bool
    profile: bool
    root: bool
    dry_run: bool
    allow_home: bool = False
    agent: str | None = None  # --agent NAME (validated by the verb that takes it)

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
            "allow_home": flag("allow-home", self.allow_home),
        }


def resolve_global_flags(
    args: Args, environ: Mapping[str, str], *, image_env: str, default_image: str
) -> GlobalFlags:
    """Combine parsed flags with the environment; ``--image`` and ``--pull-latest`` exclude.

    With neither ``--image`` nor the environment variable, the image is ``None``: it is chosen
    at launch (``default_image`` says how, for the config report).
    """
    flag_image = args.value("image")
    if flag_image is not None:
        image = Setting(flag_image, "flag --image")
        if not flag_image:
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
    if args.flag("pull_latest") and image.value is not None:
        raise UsageError(
            f"--pull-latest cannot be combined with an explicit image ({image.source})",
            hint="--pull-latest pulls the published image; drop it, or drop the explicit image",
        )
    return GlobalFlags(
        image=image,
        pull_latest=args.flag("pull_latest"),
        debug=args.flag("debug"),
        profile=args.flag("profile"),
        root=args.flag("root"),
        dry_run=args.flag("dry_run"),
        allow_home=args.flag("allow_home"),
        agent=args.value("agent"),
    )
