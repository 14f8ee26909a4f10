"""Secrets a task may use but never read: ``--secret NAME@HOST[,HOST...]``,
``--secret-file NAME@HOST[,HOST...]=PATH`` and ``[secrets]`` (pure, but for reading the file).

The value is the user's environment variable NAME, or the text of a file outside the
workspace, never a command-line word. Inside the
sandbox NAME holds a placeholder; the egress proxy, which terminates TLS for the listed hosts
only, puts the real value where the placeholder appears in a request's credential headers.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

from agentbox_cli.egress.policy import validate_pattern
from agentbox_state.errors import UsageError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# what the sandbox's environment needs as agentbox sets it (proxy, trust, Nix, identity)
RESERVED = frozenset({
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "NODE_EXTRA_CA_CERTS", "NIX_REMOTE", "SCCACHE_DIR",
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LD_LIBRARY_PATH", "LD_PRELOAD",
})  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Secret:
    name: str
    hosts: tuple[str, ...]
    value: str = dataclasses.field(repr=False)  # never printed, never in a plan's lines
    placeholder: str

    def serves(self, host: str) -> bool:
        return host in self.hosts


def parse_spec(spec: str, where: str = "--secret") -> tuple[str, tuple[str, ...]]:
    """``NAME@HOST[,HOST...]``: the name and its exact hosts; a UsageError names the fix."""
    name, sep, hosts = spec.partition("@")
    if not sep or not _NAME.match(name) or not hosts:
        raise UsageError(
            f"{where} {spec!r} is not NAME@HOST[,HOST...]",
            hint="name an environment variable and the hosts that may receive it: "
            "--secret GITHUB_TOKEN@api.github.com (the value is read from the variable)",
        )
    listed = tuple(dict.fromkeys(validate_pattern(h, where=f"{where} {name}") for h in
                                 hosts.split(",")))  # fmt: skip
    wild = [h for h in listed if h.startswith("*.")]
    if wild:
        raise UsageError(
            f"{where} {name}: {wild[0]} is a wildcard",
            hint="name each host that may receive the secret exactly",
        )
    if name.upper() in RESERVED or name.upper().startswith(("AGENTBOX_", "LOFTD_")):
        raise UsageError(
            f"{where} {name}: agentbox sets {name} itself inside the sandbox",
            hint="export the value under another name too, and name that one",
        )
    return name, listed


def parse_file_spec(spec: str, where: str = "--secret-file") -> tuple[str, tuple[str, ...], str]:
    """``NAME@HOST[,HOST...]=PATH``: the name, its hosts and the file that holds the value."""
    target, sep, path = spec.partition("=")
    if not sep or not path:
        raise UsageError(
            f"{where} {spec!r} is not NAME@HOST[,HOST...]=PATH",
            hint="name the variable the sandbox sees, its hosts and the file of the value: "
            "--secret-file GITHUB_TOKEN@api.github.com=/home/you/.config/gh/token",
        )
    name, hosts = parse_spec(target, where)
    return name, hosts, path


def parse_secret(spec: str, environ: Mapping[str, str], where: str = "--secret") -> Secret:
    """``NAME@HOST[,HOST...]``, NAME's value from ``environ``; a UsageError names the fix."""
    name, listed = parse_spec(spec, where)
    value = environ.get(name)
    if not value:
        raise UsageError(
            f"{where} {name}: the environment variable {name} is "
            f"{'empty' if value == '' else 'not set'}",
            hint=f"export {name} in the shell that runs agentbox (its value never enters the "
            "sandbox)",
        )
    return _secret(name, listed, value, where)


def read_secret_file(spec: str, workspace: str, where: str = "--secret-file") -> Secret:
    """``NAME@HOST[,HOST...]=PATH``, the value the file's text (one final line break dropped).
    A file inside the workspace is refused: the sandbox would read it there."""
    import os

    name, listed, path = parse_file_spec(spec, where)
    full = os.path.realpath(path)
    if full == workspace or full.startswith(workspace.rstrip("/") + "/"):
        raise UsageError(
            f"{where} {name}: {path} is inside the workspace {workspace}, where the sandbox "
            "reads it",
            hint="keep the secret's file outside the project (for example under ~/.config)",
        )
    try:
        with open(full, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise UsageError(
            f"{where} {name}: cannot read {path}: {why}",
            hint="name a readable text file that holds only the value",
        ) from None
    value = text.removesuffix("\n").removesuffix("\r")
    if not value:
        raise UsageError(f"{where} {name}: {path} is empty",
                         hint="put the value in it, on one line")  # fmt: skip
    return _secret(name, listed, value, where)


def _secret(name: str, hosts: tuple[str, ...], value: str, where: str) -> Secret:
    if "\r" in value or "\n" in value:
        raise UsageError(f"{where} {name}: its value has a line break, which no header can "
                         "carry")  # fmt: skip
    import secrets  # its import costs a few ms: not on every start, only with --secret

    return Secret(name=name, hosts=hosts, value=value,
                  placeholder=f"agentbox-secret-{name}-{secrets.token_hex(12)}")  # fmt: skip


def gather(*, flags: Iterable[str] = (), flag_files: Iterable[str] = (),
           configured: Iterable[str] = (), configured_files: Iterable[str] = (),
           environ: Mapping[str, str], workspace: str) -> tuple[Secret, ...]:  # fmt: skip
    """Every secret of a run: ``[secrets] env`` and ``files``, then ``--secret`` and
    ``--secret-file``; a flag replaces the config's secret of the same name, and one name
    given twice among the flags (or in the config) is refused. A file in ``workspace`` is
    refused (the sandbox reads it there)."""
    chosen: dict[str, Secret] = {}
    for layer in (
        [(spec, "[secrets] env", False) for spec in configured]
        + [(spec, "[secrets] files", True) for spec in configured_files],
        [(spec, "--secret", False) for spec in flags]
        + [(spec, "--secret-file", True) for spec in flag_files],
    ):  # fmt: skip
        seen: set[str] = set()
        for spec, where, from_file in layer:
            s = read_secret_file(spec, workspace, where) if from_file else \
                parse_secret(spec, environ, where)  # fmt: skip
            if s.name in seen:
                raise UsageError(f"{where} {s.name} is given twice",
                                 hint="list all its hosts in one: NAME@HOST,HOST")  # fmt: skip
            seen.add(s.name)
            chosen[s.name] = s
    return tuple(chosen.values())


# The request headers a secret's value may go into: those that carry credentials. Not Host,
# Origin, Referer and the like, which servers echo back (in a redirect's Location, in CORS
# headers), and which would hand the value to the sandbox.
CREDENTIAL_HEADERS = (b"authorization", b"x-api-key", b"api-key", b"x-auth-token",
                      b"private-token", b"x-goog-api-key", b"cookie")  # fmt: skip


def substitute(head: bytes, secrets: Iterable[Secret], host: str) -> bytes:
    """``head`` (a request line and header lines) with each placeholder of a secret that
    ``host`` may receive replaced in its credential headers (``CREDENTIAL_HEADERS``) only."""
    line, *headers = head.split(b"\r\n")
    serving = [s for s in secrets if s.serves(host)]
    out = [line]
    for header in headers:
        name = header.split(b":", 1)[0].strip().lower()
        if name in CREDENTIAL_HEADERS:
            for s in serving:
                header = header.replace(s.placeholder.encode(), s.value.encode())
        out.append(header)
    return b"\r\n".join(out)


def scrub(data: bytes, secrets: Iterable[Secret]) -> bytes:
    """``data`` (of an answer: its head, or a piece of its body) with every value turned back
    into its placeholder."""
    for s in secrets:
        data = data.replace(s.value.encode(), s.placeholder.encode())
    return data
