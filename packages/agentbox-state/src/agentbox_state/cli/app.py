"""An application (``agentbox`` or ``loftd``): its spec, its verbs, and how one invocation runs.

One invocation: parse argv → resolve the global flags with the environment → load the config
file → resolve state paths → run one verb inside a profiled phase → exit status. Errors become
``<prog>: message`` / ``hint: ...`` text through the ``err`` sink and the error's exit code.
"""

from __future__ import annotations

import os

from agentbox_state.cli.args import Args, Option, parse, render_help
from agentbox_state.cli.flags import GlobalFlags, Setting, global_options, resolve_global_flags
from agentbox_state.cli.outcome import failure, wants_debug
from agentbox_state.config import load_config
from agentbox_state.errors import AgentboxError, UsageError
from agentbox_state.paths import StatePaths, config_file_path
from agentbox_state.profile import Profiler, should_report
from agentbox_state.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from agentbox_state.config import ConfigFile, Schema
    from agentbox_state.runner import SubprocessRunner
    from agentbox_state.workspace import Workspace

    Sink = Callable[[str], None]


class AppSpec(Record, kw_only=True):
    """What distinguishes one command line from the other."""

    name: str
    version: str
    description: str
    image_env: str
    default_image: str
    schema: Schema
    default_verb: str | None = None
    # the config key (``table.key``) whose effective value names the verb a bare invocation
    # runs instead of ``default_verb`` (agentbox: ``run.mode``); None: always ``default_verb``
    mode_key: str | None = None
    agents: bool = False  # the global --agent NAME exists (agentbox's verbs with Verb.agent)


class Context(Record, kw_only=True):
    """Everything a verb starts from."""

    spec: AppSpec
    args: Args
    environ: Mapping[str, str]
    flags: GlobalFlags
    config: ConfigFile
    paths: StatePaths
    profiler: Profiler
    out: Sink
    err: Sink
    verbs: tuple[Verb, ...] = ()  # every verb of the command line (completion lists them)

    def runner(self) -> SubprocessRunner:
        """The process runner for this invocation: with --debug, each command is echoed to
        stderr as a line you can paste. (Imported here: subprocess is not needed to start.)"""
        from agentbox_state.runner import SubprocessRunner

        return SubprocessRunner(self.environ, echo=self.err if self.flags.debug else None)

    def mounted_workspace(self) -> Workspace:
        """The current directory's workspace, for a verb that shows it to a sandbox: refused
        when it holds the home directory (unless ``--allow-home``) or this app's state, where
        its disks, leases and keys live (``workspace.check_mountable``)."""
        import pwd

        from agentbox_state.workspace import check_mountable, current_workspace

        workspace = current_workspace()
        # both command lines' state (each holds what the other's sandbox must not see)
        apps = dict.fromkeys((self.paths.app, "agentbox", "loftd"))
        private = tuple((f"the {app} state", os.fspath(self.paths.base.parent / app))
                        for app in apps)  # fmt: skip
        try:
            account = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:
            account = ""
        # $HOME, and the account's home when HOME says otherwise
        for home in dict.fromkeys((self.environ.get("HOME", ""), account)):
            check_mountable(workspace, home=home, private=private,
                            allow_home=self.flags.allow_home)  # fmt: skip
        return workspace


class Verb(Record):
    """A verb: its name, one line of help, its own options, and what it runs."""

    name: str
    help: str
    run: Callable[[Context], int]
    options: tuple[Option, ...] = ()
    actions: tuple[str, ...] = ()
    action_required: bool = True
    runs_command: bool = False
    # the metavar of its operands (the words after its action, or after the verb when it has
    # none, `--` or not): CONF, TASK; shown in help, completed by name
    operand: str | None = None
    hidden: bool = False  # not offered by shell completion (`internal`)
    agent: bool = False  # takes the global --agent NAME (others refuse it)


def help_text(spec: AppSpec, verbs: Sequence[Verb], verb: str | None = None) -> str:
    table = {v.name: (v.help, v.options) for v in verbs}
    operand = next((v.operand for v in verbs if v.name == verb), None)
    opts = global_options(spec.image_env, agent=spec.agents)
    return render_help(spec.name, spec.description, opts, table, verb, operand)


def build_context(
    spec: AppSpec,
    args: Args,
    environ: Mapping[str, str],
    *,
    out: Sink,
    err: Sink,
    config: ConfigFile | None = None,
    verbs: Sequence[Verb] = (),
) -> Context:
    """``config``: the config file already loaded (to choose the default verb), else loaded here."""
    flags = resolve_global_flags(
        args, environ, image_env=spec.image_env, default_image=spec.default_image
    )
    profiler = Profiler(f"{spec.name} host profile", enabled=flags.profile)
    with profiler.phase("config_load"):
        if config is None:
            config = load_config(config_file_path(spec.name, environ), spec.schema, environ)
        paths = StatePaths.resolve(spec.name, environ, config)
    return Context(
        spec=spec,
        args=args,
        environ=environ,
        flags=flags,
        config=config,
        paths=paths,
        profiler=profiler,
        out=out,
        err=err,
        verbs=tuple(verbs),
    )


def effective_settings(ctx: Context) -> dict[str, Setting]:
    """Every config key (from the file or its default), the state base, then the global flags."""
    settings: dict[str, Setting] = {}
    for table, keys in ctx.spec.schema.items():
        for key, spec in keys.items():
            key_path = f"{table}.{key}"
            if key_path in ctx.config.overrides:
                value, var = ctx.config.overrides[key_path]
                settings[key_path] = Setting(value, f"env {var}")
            elif key_path in ctx.config.values:
                where = f"{ctx.config.path} [{table}].{key}"
                settings[key_path] = Setting(ctx.config.values[key_path], where)
            else:
                settings[key_path] = Setting(spec.default, "default")
    settings["state.base"] = Setting(os.fspath(ctx.paths.base), ctx.paths.base_source)
    settings.update(ctx.flags.settings())
    return settings


def default_verb(spec: AppSpec, environ: Mapping[str, str]) -> tuple[str | None, ConfigFile | None]:
    """The verb a bare invocation runs (``spec.mode_key``'s effective value, else
    ``spec.default_verb``) and the config that said so. A config that cannot be loaded gives
    ``spec.default_verb`` and None: ``build_context`` then raises its error before any verb
    runs (so ``--help`` and ``--version`` still answer), nothing falls back silently."""
    if spec.mode_key is None:
        return spec.default_verb, None
    try:
        config = load_config(config_file_path(spec.name, environ), spec.schema, environ)
    except AgentboxError:
        return spec.default_verb, None
    chosen = config.get(spec.mode_key)
    return (chosen if isinstance(chosen, str) else spec.default_verb), config


def run(
    spec: AppSpec,
    verbs: Sequence[Verb],
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    out: Sink,
    err: Sink,
) -> int:
    table = {v.name: v.options for v in verbs}
    actions = {v.name: v.actions for v in verbs if v.actions}
    optional = [v.name for v in verbs if not v.action_required]
    default, config = default_verb(spec, environ)
    args = parse(
        spec.name, argv, global_options(spec.image_env, agent=spec.agents), table, actions,
        optional, default_verb=default, operand_verbs=[v.name for v in verbs if v.operand],
    )  # fmt: skip
    if args.verb is None and default and not (args.help or args.version):
        args = Args(verb=default, values=args.values, command=args.command)
    if args.help or (args.verb is None and not args.version):
        out(help_text(spec, verbs, args.verb))
        return 0
    if args.version:
        out(f"{spec.name} {spec.version}")
        return 0
    verb = next((v for v in verbs if v.name == args.verb), None)
    assert verb is not None  # parse accepts only known verbs
    if args.command and not verb.runs_command:
        raise UsageError(
            f"'{args.verb}' runs no command; remove the words after --",
            hint=f"see '{spec.name} {args.verb} --help'",
        )
    if args.value("agent") is not None and not verb.agent:
        takers = " or ".join(v.name for v in verbs if v.agent) or "no verb"
        raise UsageError(f"'{args.verb}' takes no --agent",
                         hint=f"--agent goes with {takers}; drop it here")  # fmt: skip
    ctx = build_context(spec, args, environ, out=out, err=err, config=config, verbs=verbs)
    try:
        with ctx.profiler.phase(verb.name):
            return verb.run(ctx)
    finally:
        if should_report(profile=ctx.flags.profile, debug=ctx.flags.debug):
            err(ctx.profiler.report())


def main(
    spec: AppSpec,
    verbs: Sequence[Verb],
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    out: Sink,
    err: Sink,
) -> int:
    """``run`` with every exception turned into a message on ``err`` and an exit status."""
    try:
        return run(spec, verbs, argv, environ, out=out, err=err)
    except BaseException as exc:  # noqa: BLE001 - the one place errors become messages
        code, text = failure(spec.name, exc, debug=wants_debug(list(argv)))
        if text:
            err(text)
        return code
