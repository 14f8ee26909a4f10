"""A small command-line parser for ``agentbox`` and ``loftd``.

argparse costs ~20 ms to import and set up on our reference host (``re``, ``enum``, ``gettext``,
``locale``, ``shutil``), most of the start-up budget of ``agentbox --help`` and ``agentbox paths``
(see ``nox -s bench``). The grammar we need is small, so it is parsed here by hand:

    PROG [OPTION...] [VERB] [OPTION...] [-- COMMAND...]

Global options may come before or after the verb; a verb's own options only after it.
``--name value`` and ``--name=value`` both work; a value option given twice is refused unless it
is repeatable; ``--`` ends the options and the rest is the command. ``-h``/``--help`` and
``--version`` are answered before anything else is checked.
"""

from __future__ import annotations

from agentbox_state.errors import UsageError
from agentbox_state.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


class Option(Record):
    """``--name`` (and optionally ``-x``): a flag, or one taking a ``metavar`` value."""

    name: str
    help: str
    metavar: str | None = None
    short: str | None = None
    repeat: bool = False
    # the fixed set of values it accepts, when there is one: completion offers exactly these
    # (the verb validates against the same tuple, or a test pins that its list equals it)
    choices: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        return self.name.removeprefix("--").replace("-", "_")

    @property
    def label(self) -> str:
        names = f"{self.short}, {self.name}" if self.short else self.name
        return f"{names} {self.metavar}" if self.metavar else names


class Args(Record, kw_only=True):
    """The parse result: the verb (or None), option values by dest, and the command after --."""

    verb: str | None
    values: dict[str, object]
    command: tuple[str, ...] = ()
    help: bool = False
    version: bool = False
    action: str | None = None

    def flag(self, dest: str) -> bool:
        return bool(self.values.get(dest, False))

    def value(self, dest: str) -> str | None:
        found = self.values.get(dest)
        return found if isinstance(found, str) else None


def _lookup(options: Sequence[Option], word: str) -> Option | None:
    for option in options:
        if word in (option.name, option.short):
            return option
    return None


def _positional(
    word: str,
    verb: str | None,
    action: str | None,
    verbs: Mapping[str, Sequence[Option]],
    acts: Mapping[str, Sequence[str]],
    help_hint: str,
) -> tuple[str | None, str | None]:
    """A word that is not an option: the verb, else the verb's action; (verb, action)."""
    allowed = acts.get(verb or "", ())
    if verb is not None and allowed and action is None:
        if word not in allowed:
            choices = ", ".join(allowed)
            raise UsageError(
                f"unknown action {word!r} for '{verb}' (choose from: {choices})", hint=help_hint
            )
        return verb, word
    if verb is not None:
        raise UsageError(f"unexpected argument {word!r} after '{verb}'", hint=help_hint)
    if word not in verbs:
        choices = ", ".join(verbs)
        raise UsageError(f"unknown verb {word!r} (choose from: {choices})", hint=help_hint)
    return word, None


def parse(
    prog: str,
    argv: Sequence[str],
    global_options: Sequence[Option],
    verbs: Mapping[str, Sequence[Option]],
    actions: Mapping[str, Sequence[str]] | None = None,
    optional_actions: Sequence[str] = (),
    default_verb: str | None = None,
    operand_verbs: Sequence[str] = (),
) -> Args:
    """Parse ``argv``; raise ``UsageError`` (exit 2) naming the offending word. A verb listed
    in ``actions`` takes one action word (``image build``); for one in ``operand_verbs`` the
    words after its action (or after the verb, when it takes no action) are operands, with or
    without ``--`` (``internal krun-enter CONF``, ``stop TASK``)."""
    help_hint = f"see '{prog} --help'"
    verb: str | None = None
    action: str | None = None
    acts = actions or {}
    values: dict[str, object] = {}
    command: tuple[str, ...] = ()
    wants_help = wants_version = False
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            command = (*command, *argv[i:])
            break
        if word in ("-h", "--help"):
            wants_help = True
            continue
        if word == "--version" and verb is None:
            wants_version = True
            continue
        if not word.startswith("-") or word == "-":
            if verb in operand_verbs and (action is not None or not acts.get(verb or "")):
                command = (*command, word)
                continue
            verb, action = _positional(word, verb, action, verbs, acts, help_hint)
            continue
        name, eq, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        # before any verb word, the default verb's own options count too (`loftd --mem 8`)
        scope = [*global_options, *verbs.get(verb or default_verb or "", ())]
        option = _lookup(scope, name)
        if option is None:
            where = f"for '{verb}'" if verb else "before the verb"
            owners = [v for v, opts in verbs.items() if _lookup(opts, name)]
            hint = f"{name} belongs after the verb: {prog} {owners[0]} {name}" if owners else None
            raise UsageError(f"unknown option {name} {where}", hint=hint or help_hint)
        if option.metavar is None:
            if eq:
                raise UsageError(f"{name} takes no value (got {word!r})", hint=help_hint)
            values[option.dest] = True
            continue
        if eq:
            value = inline
        elif i < len(argv):
            value = argv[i]
            i += 1
        else:
            raise UsageError(f"{name} needs a value ({option.metavar})", hint=help_hint)
        if option.repeat:
            previous = values.get(option.dest, ())
            values[option.dest] = (*previous, value) if isinstance(previous, tuple) else (value,)
        elif option.dest in values:
            raise UsageError(f"{name} is given twice", hint="give it once")
        else:
            values[option.dest] = value
    if verb is not None and acts.get(verb) and verb not in optional_actions and action is None \
            and not wants_help:  # fmt: skip
        choices = ", ".join(acts[verb])
        raise UsageError(
            f"'{verb}' needs an action ({choices})", hint=f"see '{prog} {verb} --help'"
        )
    return Args(
        verb=verb,
        values=values,
        command=command,
        help=wants_help,
        version=wants_version,
        action=action,
    )


def _table(rows: Sequence[tuple[str, str]]) -> list[str]:
    width = max((len(left) for left, _ in rows), default=0)
    return [f"  {left:<{width}}  {right}".rstrip() for left, right in rows]


def render_help(
    prog: str,
    description: str,
    global_options: Sequence[Option],
    verbs: Mapping[str, tuple[str, Sequence[Option]]],
    verb: str | None = None,
    operand: str | None = None,
) -> str:
    """Help for ``prog`` (``verb`` None) or for one verb (taking ``operand`` words, if named):
    usage, description, options."""
    if verb is None:
        lines = [f"usage: {prog} [OPTIONS] [VERB] [VERB OPTIONS]", "", description, ""]
        lines += ["verbs:", *_table([(name, text) for name, (text, _) in verbs.items()]), ""]
    else:
        text, own = verbs[verb]
        shown = " ".join(f"[{o.label}]" for o in own)
        words = f"{shown} [OPTIONS] {operand or ''}".strip()
        lines = [f"usage: {prog} {verb} {words}".replace("  ", " "), "", text, ""]
        if own:
            lines += [f"{verb} options:", *_table([(o.label, o.help) for o in own]), ""]
    lines.append("options (before or after the verb):")
    rows = [(o.label, o.help) for o in global_options]
    rows.append(("-h, --help", "show this help and exit"))
    if verb is None:
        rows.append(("--version", "print the version and exit"))
    lines += _table(rows)
    return "\n".join(lines)
