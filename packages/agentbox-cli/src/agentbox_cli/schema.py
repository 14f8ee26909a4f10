"""The ``agentbox`` application: its name, environment and what ``agentbox.toml`` may contain."""

from __future__ import annotations

from agentbox_cli import __version__
from agentbox_podman.images import LOCAL_IMAGE, PUBLISHED_IMAGE
from agentbox_state.cli.app import AppSpec
from agentbox_state.config import (
    STATE_TABLE,
    Key,
    non_negative_int,
    one_of,
    string_list,
    whole_number_text,
)

MODES = ("libkrun", "container", "microvm")  # the verbs `[run] mode` may name; libkrun first
MODE_KEY = "run.mode"

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
