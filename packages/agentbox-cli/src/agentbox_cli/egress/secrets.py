"""Secrets a task may use but never read: ``--secret NAME@HOST[,HOST...]`` (pure).

The value is the user's environment variable NAME, never a command-line word. Inside the
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


def parse_secret(spec: str, environ: Mapping[str, str]) -> Secret:
    """``NAME@HOST[,HOST...]``, NAME's value from ``environ``; a UsageError names the fix."""
    name, sep, hosts = spec.partition("@")
    if not sep or not _NAME.match(name) or not hosts:
        raise UsageError(
            f"--secret {spec!r} is not NAME@HOST[,HOST...]",
            hint="name an environment variable and the hosts that may receive it: "
            "--secret GITHUB_TOKEN@api.github.com (the value is read from the variable)",
        )
    listed = tuple(dict.fromkeys(validate_pattern(h, where=f"--secret {name}") for h in
                                 hosts.split(",")))  # fmt: skip
    wild = [h for h in listed if h.startswith("*.")]
    if wild:
        raise UsageError(
            f"--secret {name}: {wild[0]} is a wildcard",
            hint="name each host that may receive the secret exactly",
        )
    if name.upper() in RESERVED or name.upper().startswith(("AGENTBOX_", "LOFTD_")):
        raise UsageError(
            f"--secret {name}: agentbox sets {name} itself inside the sandbox",
            hint="export the value under another name too, and name that one",
        )
    value = environ.get(name)
    if not value:
        raise UsageError(
            f"--secret {name}: the environment variable {name} is "
            f"{'empty' if value == '' else 'not set'}",
            hint=f"export {name} in the shell that runs agentbox (its value never enters the "
            "sandbox)",
        )
    if "\r" in value or "\n" in value:
        raise UsageError(f"--secret {name}: its value has a line break, which no header can "
                         "carry")  # fmt: skip
    import secrets  # its import costs a few ms: not on every start, only with --secret

    return Secret(name=name, hosts=listed, value=value,
                  placeholder=f"agentbox-secret-{name}-{secrets.token_hex(12)}")  # fmt: skip


def parse_secrets(specs: Iterable[str], environ: Mapping[str, str]) -> tuple[Secret, ...]:
    found = tuple(parse_secret(s, environ) for s in specs)
    names = [s.name for s in found]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise UsageError(f"--secret {twice} is given twice",
                         hint="list all its hosts in one: NAME@HOST,HOST")  # fmt: skip
    return found


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
    """``data`` (a response's head) with every value turned back into its placeholder."""
    for s in secrets:
        data = data.replace(s.value.encode(), s.placeholder.encode())
    return data
