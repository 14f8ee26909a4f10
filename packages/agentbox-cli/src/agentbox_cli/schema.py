"""The ``agentbox`` application: its name, environment and what ``agentbox.toml`` may contain."""

from __future__ import annotations

from agentbox_cli import __version__
from agentbox_podman.images import LOCAL_IMAGE, PUBLISHED_IMAGE
from agentbox_state.cli.app import AppSpec
from agentbox_state.config import (
    STATE_TABLE,
    Invalid,
    Key,
    boolean,
    non_negative_int,
    one_of,
    string_list,
    toml_repr,
    whole_number_text,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

MODES = ("libkrun", "container", "microvm")  # the verbs `[run] mode` may name; libkrun first
MODE_KEY = "run.mode"
NETWORK_MODES = ("open", "none", "allow")  # [network] mode and --net (agentbox_cli.egress)


def host_patterns(value: object) -> tuple[str, ...]:
    """Converter: ``[network] allow``, host names and ``*.`` suffixes, normalized."""
    from agentbox_cli.egress.policy import validate_pattern

    return tuple(_each(value, validate_pattern, "a host name or *. suffix"))


def resolve_entries(value: object) -> tuple[str, ...]:
    """Converter: ``[network] resolve``, ``NAME:ADDRESS`` entries."""
    from agentbox_cli.egress.policy import parse_resolve

    return tuple(_each(value, lambda entry: ":".join(parse_resolve(entry)), "NAME:ADDRESS"))


def secret_specs(value: object) -> tuple[str, ...]:
    """Converter: ``[secrets] env``, ``NAME@HOST[,HOST...]`` entries (the values are read from
    the environment when a task starts)."""
    from agentbox_cli.egress.secrets import parse_spec

    def check(entry: str) -> str:
        parse_spec(entry, "[secrets] env")
        return entry

    return tuple(_each(value, check, "NAME@HOST[,HOST...]"))


def secret_file_specs(value: object) -> tuple[str, ...]:
    """Converter: ``[secrets] files``, ``NAME@HOST[,HOST...]=PATH`` entries, PATH absolute."""
    from agentbox_cli.egress.secrets import parse_file_spec
    from agentbox_state.errors import UsageError

    def check(entry: str) -> str:
        path = parse_file_spec(entry, "[secrets] files")[2]
        if not path.startswith("/"):
            raise UsageError(f"{path} is a relative path", hint="write the file's full path")
        return entry

    return tuple(_each(value, check, "NAME@HOST[,HOST...]=PATH with an absolute PATH"))


def _each(value: object, check: Callable[[str], str], what: str) -> list[str]:
    from agentbox_state.errors import UsageError

    out = []
    for item in string_list(value):
        try:
            out.append(check(item))
        except UsageError as err:
            raise Invalid(f"has the element {toml_repr(item)}, not {what}", err.hint) from None
    return out


SPEC = AppSpec(
    name="agentbox",
    version=__version__,
    description="""\
An isolated, persistent sandbox shell for the project in the current directory.
The project is mounted at /workspace; the Nix store, container images, caches and
agent config survive across runs. State lives outside the project: see 'agentbox paths'.""",
    image_env="AGENTBOX_IMAGE",
    default_verb="libkrun",
    mode_key=MODE_KEY,
    agents=True,
    default_image=f"{LOCAL_IMAGE} when present, else {PUBLISHED_IMAGE}",
    schema={
        "state": STATE_TABLE,
        "run": {
            "mode": Key(
                accepted='"libkrun", "container" or "microvm" (what bare `agentbox` runs)',
                convert=one_of(*MODES),
                default=MODES[0],
                env="AGENTBOX_MODE",
            ),
        },
        "container": {
            "sidecar_idle_grace": Key(
                accepted="a whole number of seconds (0 removes the sidecar when the last task "
                "exits)",
                convert=non_negative_int,
                default=120,
                env="AGENTBOX_SIDECAR_IDLE_GRACE",
                from_env=whole_number_text,
            ),
        },
        "network": {
            "mode": Key(
                accepted='"open" (the host\'s network), "none" (loopback only) or "allow" (only '
                "the hosts of [network] allow, through agentbox's proxy; container mode)",
                convert=one_of(*NETWORK_MODES),
                default=NETWORK_MODES[0],
            ),
            "allow": Key(
                accepted='an array of host names or *. suffixes, like ["github.com", '
                '"*.npmjs.org"]',
                convert=host_patterns,
                default=(),
            ),
            "resolve": Key(
                accepted="an array of NAME:ADDRESS, the address the proxy uses for a name, like "
                '["registry.internal:10.0.0.5"]',
                convert=resolve_entries,
                default=(),
            ),
            "nix_outside_policy": Key(
                accepted="true or false (the default): true gives a task under mode none or "
                "allow the project's Nix daemon, which fetches with the host's network, outside "
                "the policy",
                convert=boolean,
                default=False,
            ),
        },
        "secrets": {
            "env": Key(
                accepted='an array of NAME@HOST[,HOST...], like ["GITHUB_TOKEN@api.github.com"]: '
                "the sandbox sees a placeholder in $NAME, the proxy sends the value of your $NAME "
                "to those hosts (container mode, with [network] mode allow)",
                convert=secret_specs,
                default=(),
            ),
            "files": Key(
                accepted="an array of NAME@HOST[,HOST...]=PATH, the value being the text of the "
                'file PATH (absolute, outside the project), like ["OPENAI_API_KEY@api.openai.com'
                '=/home/you/.config/openai/key"]',
                convert=secret_file_specs,
                default=(),
            ),
        },
        "image": {
            "packages": Key(
                accepted='an array of Debian package names, like ["ripgrep", "htop"]',
                convert=string_list,
                default=(),
            ),
            "npm": Key(
                accepted='an array of npm package names, like ["typescript"]',
                convert=string_list,
                default=(),
            ),
        },
    },
)
