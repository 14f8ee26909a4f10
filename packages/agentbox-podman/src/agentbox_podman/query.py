"""Structured questions to Podman: which containers carry a label.

Through podman-py when the user's Podman API socket answers (one HTTP request, no process), else
through ``podman ps --format json``. podman-py is imported only here, only then: it is not on
any command's start-up path.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence

from agentbox_podman import podman
from agentbox_podman.errors import PodmanError
from agentbox_state.errors import CommandError
from agentbox_state.runner import Runner


def api_socket(environ: Mapping[str, str]) -> str | None:
    """The Podman API socket if one answers: ``CONTAINER_HOST`` (unix://), else the rootless
    default under ``XDG_RUNTIME_DIR`` or root's ``/run/podman/podman.sock``."""
    host = environ.get("CONTAINER_HOST", "")
    if host.startswith("unix://"):
        candidates = [host.removeprefix("unix://")]
    elif os.getuid() == 0:
        candidates = ["/run/podman/podman.sock"]
    else:
        runtime = environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
        candidates = [f"{runtime}/podman/podman.sock"]
    for path in candidates:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(0.5)
            try:
                s.connect(path)
                return path
            except OSError:
                continue
    return None


def containers_with_labels(
    labels: Sequence[tuple[str, str]], runner: Runner, *, api: str | None, debug: bool = False
) -> list[str]:
    """Names of running containers carrying every label; raises ``PodmanError`` when Podman
    cannot be asked (callers fail closed). ``debug`` is Podman's ``--log-level=debug`` for the
    command; the API has no such thing (see ``_via_api``)."""
    if api is not None:
        return _via_api(labels, api)
    try:
        out = runner.run(podman.ps_json(labels, debug=debug)).stdout
        return sorted(str(c["Names"][0]) for c in json.loads(out or "[]") or [])
    except (CommandError, ValueError, KeyError, IndexError) as err:
        raise PodmanError(f"cannot list containers: {err}") from err


def _via_api(labels: Sequence[tuple[str, str]], api: str) -> list[str]:
    from podman import PodmanClient
    from podman.errors import APIError
    from podman.errors import PodmanError as ClientError

    # No --debug here: a log level is a property of the podman process, and this asks the API
    # service that is already running (one HTTP request); its log level is whatever the
    # service was started with (podman --log-level=debug system service), not ours to set.
    # podman-py sends one label filter correctly but not a list of them: ask for the first,
    # check the rest here.
    first = {"label": f"{labels[0][0]}={labels[0][1]}"} if labels else {}
    try:
        with PodmanClient(base_url=f"unix://{api}") as client:
            found = client.containers.list(filters=first)
            return sorted(
                str(c.name) for c in found if all(c.labels.get(k) == v for k, v in labels)
            )
    except (APIError, ClientError, OSError) as err:
        raise PodmanError(f"the Podman API at {api} could not list containers: {err}") from err
