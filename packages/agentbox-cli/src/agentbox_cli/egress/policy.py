"""Which hosts a task may reach: the ``[network]`` policy, pure and validated.

A pattern is an exact DNS name (``github.com``) or a leading wildcard (``*.npmjs.org``, which
matches ``registry.npmjs.org`` and ``a.b.npmjs.org`` but not ``npmjs.org`` itself). Names
compare case-insensitively, without a trailing dot.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Literal

from agentbox_state.errors import AgentboxError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agentbox_state.config import ConfigFile

Mode = Literal["open", "none", "allow"]
MODES: tuple[Mode, ...] = ("open", "none", "allow")

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalize_host(host: str) -> str:
    """``host`` lowercased, without a trailing dot."""
    return host.strip().lower().rstrip(".")


def is_dns_name(name: str) -> bool:
    labels = name.split(".")
    return len(name) <= 253 and len(labels) >= 1 and all(_LABEL.match(label) for label in labels)


def validate_pattern(pattern: str, *, where: str = "--allow") -> str:
    """The normalized ``pattern``, or a UsageError naming ``where`` and the accepted forms."""
    norm = normalize_host(pattern)
    name = norm[2:] if norm.startswith("*.") else norm
    if not is_dns_name(name) or "*" in name:
        raise UsageError(
            f"{where}: {pattern!r} is not a host pattern",
            hint="use an exact DNS name (github.com) or a leading wildcard (*.npmjs.org); "
            "no ports, schemes, paths, IP addresses or inner '*'",
        )
    if name.replace(".", "").isdigit():
        raise UsageError(
            f"{where}: {pattern!r} is an IP address, not a host name",
            hint="allow the host's DNS name; to point a name at an address use "
            '[network] resolve = { "name" = "ADDRESS" }',
        )
    return norm


def matches(pattern: str, host: str) -> bool:
    """Whether normalized ``pattern`` matches ``host``."""
    h = normalize_host(host)
    if pattern.startswith("*."):
        return h.endswith(pattern[1:]) and len(h) > len(pattern) - 1
    return h == pattern


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NetworkPolicy:
    """A task's network policy: ``mode``, the allowed patterns and the resolve overrides."""

    mode: Mode = "open"
    allow: tuple[str, ...] = ()
    resolve: tuple[tuple[str, str], ...] = ()

    @property
    def enforced(self) -> bool:
        """Whether the sandbox is cut off from the network (``none`` or ``allow``)."""
        return self.mode != "open"

    def allows(self, host: str) -> bool:
        """Whether a connection to ``host`` is allowed (``open`` allows every host)."""
        if self.mode == "open":
            return True
        if self.mode == "none":
            return False
        return any(matches(p, host) for p in self.allow)

    def resolved(self, host: str) -> str | None:
        """The override address of ``host``, if ``[network] resolve`` names it."""
        h = normalize_host(host)
        return next((addr for name, addr in self.resolve if name == h), None)

    def describe(self) -> str:
        """One line for ``--dry-run``."""
        if self.mode == "allow":
            return "network: allow " + (", ".join(self.allow) or "(no host)")
        return f"network: {self.mode}"


OPEN = NetworkPolicy()  # the host's network, as before any policy


def parse_mode(value: str, *, where: str = "--net") -> Mode:
    """``value`` as a :data:`Mode`, or a :class:`UsageError` listing the modes."""
    if value not in MODES:
        raise UsageError(
            f"{where}: unknown network mode {value!r}", hint="use one of: " + ", ".join(MODES)
        )
    return value


def parse_resolve(entry: str, *, where: str = "[network] resolve") -> tuple[str, str]:
    """``NAME:ADDRESS`` (podman's ``--add-host`` form) as a normalized pair, or a UsageError."""
    import ipaddress

    name, _, addr = entry.partition(":")
    try:
        norm = validate_pattern(name, where=where)
        ipaddress.ip_address(addr)
    except (UsageError, ValueError):
        norm = ""
    if not norm or norm.startswith("*."):
        raise UsageError(
            f"{where}: {entry!r} is not NAME:ADDRESS",
            hint='name one host and its IP address per entry: resolve = ["web.test:127.0.0.1"]',
        )
    return norm, addr


def build_policy(
    *,
    mode: str | None = None,
    configured_mode: str = "open",
    allow: Iterable[str] = (),
    extra_allow: Iterable[str] = (),
    resolve: Iterable[str] = (),
) -> NetworkPolicy:
    """The policy of the config's ``[network]`` (``configured_mode``, ``allow``, ``resolve``)
    and the ``--net``/``--allow`` flags (``mode``, ``extra_allow``), validated.

    ``--allow`` adds to the config's list; with no mode chosen anywhere it means ``allow``; with
    ``none`` or an explicit ``--net open`` it is refused (it would not be obeyed).
    """
    extra = tuple(validate_pattern(p, where="--allow") for p in extra_allow)
    listed = tuple(validate_pattern(p, where="[network] allow") for p in allow)
    chosen = parse_mode(mode) if mode is not None else None
    m = chosen or parse_mode(configured_mode, where="[network] mode")
    if listed and chosen is None and m == "open":  # a list alone: it is meant (fail closed)
        m = "allow"
    if extra and m != "allow":
        if m == "open" and chosen is None:
            m = "allow"
        else:
            raise UsageError(
                f"--allow cannot be combined with network mode '{m}'",
                hint="use --net allow --allow HOST, or drop --allow",
            )
    pairs = tuple(parse_resolve(entry) for entry in resolve)
    merged = tuple(dict.fromkeys(listed + extra))
    return NetworkPolicy(mode=m, allow=merged, resolve=pairs)


def refuse_unenforced(config: ConfigFile, *, verb: str) -> None:
    """A mode that cannot enforce a policy refuses to start under one, rather than claim it
    (``[network] allow`` alone is one: see ``build_policy``), and under ``[secrets]``, which
    only the proxy can carry."""
    configured, allow = config.get("network.mode"), config.get("network.allow")
    secrets = [s for key in ("secrets.env", "secrets.files")
               for s in _entries(config.get(key))]  # fmt: skip
    if secrets:
        name = secrets[0].partition("@")[0]
        raise AgentboxError(
            f"agentbox {verb} cannot carry the secrets of [secrets] ({name} first): its VM has "
            "the host's network and no proxy to put them in requests",
            hint="run `agentbox container` (it does), or move [secrets] out of the config file "
            f"to use {verb}",
        )
    if configured in (None, "open") and not allow:
        return
    if configured in (None, "open"):
        configured = "allow"
    raise AgentboxError(
        f"agentbox {verb} cannot enforce [network] mode = {configured!r}: its VM has the "
        "host's network",
        hint=f'run `agentbox container` (it enforces it), or set [network] mode = "open" to '
        f"use {verb} with the host's network",
    )


def _entries(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, tuple) else []


def denial_body(host: str) -> str:
    """The body of a 403: the denied host and how to allow it."""
    return (
        f"agentbox: the network policy denies {host}\n"
        f'hint: add it to [network] allow = ["{host}"] in agentbox.toml, or pass --allow {host}\n'
    )
