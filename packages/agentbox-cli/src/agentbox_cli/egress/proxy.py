"""The egress proxy: a small asyncio HTTP proxy that lets a task reach only what its policy allows.

It speaks plain HTTP forwarding (``GET http://host/path``) and ``CONNECT host:port`` tunnels. It
resolves names itself (``[network] resolve`` overrides first), so the sandbox needs no DNS. A
denied request gets ``403`` with a body naming the host and the config key to add, and one JSON
line is appended to the denial log.

Bounded: a client that does not finish its request head within ``header_timeout`` is dropped,
at most ``max_connections`` clients are served at once (others get ``503``), and nothing blocks
the event loop (name lookups run in the loop's executor, the log is appended in one short write).

TLS interception seam: ``intercept_for(host)`` is called for each allowed ``CONNECT``. When it
returns ``None`` the tunnel carries the client's bytes untouched; otherwise the returned
:class:`Interceptor` gets the client's streams (after ``200 Connection established``) and the
target, and owns the connection from then on (it may terminate TLS with its own CA and open its
own upstream connection with :meth:`EgressProxy.open_upstream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from agentbox_cli.egress.policy import NetworkPolicy, denial_body, is_dns_name, normalize_host

HEAD_LIMIT = 64 * 1024
_HOP_HEADERS = frozenset({"proxy-connection", "proxy-authorization", "connection", "keep-alive",
                          "host"})  # fmt: skip


class Interceptor(Protocol):
    """Owns an allowed ``CONNECT`` to ``host:port`` once the client was told ``200``."""

    async def handle(
        self,
        proxy: EgressProxy,
        host: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Serve the client's connection; the proxy closes ``writer`` afterwards."""
        ...


InterceptFor = Callable[[str], Interceptor | None]


class _RefusedError(Exception):
    def __init__(self, status: int, reason: str, body: str):
        super().__init__(reason)
        self.status, self.reason, self.body = status, reason, body


def _no_interception(_host: str) -> Interceptor | None:
    return None


def _split_host_port(authority: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` checked: a DNS name (no IP literal, no byte a log or a terminal would
    misread) and a port of 1 to 65535."""
    if authority.startswith("["):
        raise _RefusedError(400, "Bad Request", "agentbox: IP literals are not allowed\n")
    host, sep, port = authority.rpartition(":")
    if not sep:
        host, port = authority, str(default_port)
    host = normalize_host(host)
    if not is_dns_name(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise _RefusedError(400, "Bad Request", "agentbox: not a host name and port\n")
    return host, int(port)


def _peer_uid(writer: asyncio.StreamWriter) -> int:
    """The uid of the process at the other end of a Unix socket (socket(7) SO_PEERCRED:
    struct ucred of pid, uid, gid); -1 when there is none."""
    import socket
    import struct

    sock = writer.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return -1
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                     struct.calcsize("3i")))  # fmt: skip
    return int(uid)


def _public(addr: str) -> bool:
    """Whether ``addr`` is on the internet: not loopback, private, link-local (the cloud
    metadata address among them), multicast or unspecified."""
    import ipaddress

    ip = ipaddress.ip_address(addr)
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_unspecified or ip.is_reserved)  # fmt: skip


class EgressProxy:
    """The proxy of one task; serve it with :meth:`serve_unix` or :meth:`serve_tcp`."""

    def __init__(
        self,
        policy: NetworkPolicy,
        *,
        denial_log: Path | None = None,
        intercept_for: InterceptFor = _no_interception,
        header_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        max_connections: int = 512,
        peer_allowed: Callable[[int], bool] | None = None,
    ):
        self.policy = policy
        self.denial_log = denial_log
        self.intercept_for = intercept_for
        self.header_timeout = header_timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        # on a Unix socket: whether a client of this uid (SO_PEERCRED) may use the proxy
        self.peer_allowed = peer_allowed
        self.active = 0
        self._clients: set[asyncio.StreamWriter] = set()

    async def serve_unix(self, path: Path, *, mode: int = 0o666) -> asyncio.Server:
        """Listen on the Unix socket ``path`` (replaced if stale), with permissions ``mode``."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        server = await asyncio.start_unix_server(self._client, path=os.fspath(path),
                                                 limit=HEAD_LIMIT, backlog=512)  # fmt: skip
        os.chmod(path, mode)
        return server

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0, *,
                        backlog: int = 256) -> asyncio.Server:  # fmt: skip
        """Listen on TCP ``host:port`` (tests and the bench)."""
        return await asyncio.start_server(self._client, host, port, limit=HEAD_LIMIT,
                                          backlog=backlog)  # fmt: skip

    async def resolve(self, host: str, port: int) -> str:
        """The address to connect to for ``host``: the ``[network] resolve`` override, else the
        system's lookup, which must be a public address (an allowed name that resolves to the
        host's own or a private network would reach what the sandbox must not)."""
        override = self.policy.resolved(host)
        if override is not None:
            return override
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=1)
        public = [str(info[4][0]) for info in infos if _public(str(info[4][0]))]
        if not public:
            raise OSError(f"{host} has no public address (name it in [network] resolve to "
                          "reach a private one)")  # fmt: skip
        return public[0]

    async def open_upstream(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to ``host:port`` (resolved by ``resolve``) within ``connect_timeout``."""
        addr = await self.resolve(host, port)
        async with asyncio.timeout(self.connect_timeout):  # no task of its own, as wait_for
            return await asyncio.open_connection(addr, port)

    def hold(self, writer: asyncio.StreamWriter) -> None:
        """Count ``writer`` among the connections ``abort_all`` drops (until ``release``)."""
        self._clients.add(writer)

    def release(self, writer: asyncio.StreamWriter) -> None:
        self._clients.discard(writer)

    def abort_all(self) -> None:
        """Drop every connection still open, both sides (the task ended): their handlers then
        finish."""
        for writer in list(self._clients):
            writer.transport.abort()

    def _log_denial(self, method: str, host: str, port: int) -> None:
        if self.denial_log is None:
            return
        line = json.dumps({"time": time.time(), "method": method, "host": host, "port": port})
        fd = os.open(self.denial_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.peer_allowed is not None and not self.peer_allowed(_peer_uid(writer)):
                return  # another user of this host: not this task's sandbox
            if self.active >= self.max_connections:
                # The head is read first (briefly) so the client sees the 503, not a reset.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(self.header_timeout, 1.0)):
                        await reader.readuntil(b"\r\n\r\n")
                await respond(
                    writer, 503, "Service Unavailable", "agentbox: too many connections\n"
                )
                return
            self.active += 1
            self._clients.add(writer)
            try:
                await self._serve(reader, writer)
            finally:
                self.active -= 1
                self._clients.discard(writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            await close(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.header_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            await respond(writer, 408, "Request Timeout", "agentbox: request head too slow\n")
            return
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
            if method == "CONNECT":
                host, port = _split_host_port(target, 443)
                path = ""
            else:
                if not target.startswith("http://"):
                    raise _RefusedError(
                        400, "Bad Request", "agentbox: only http:// URLs or CONNECT\n"
                    )
                authority, _, rest = target[len("http://") :].partition("/")
                host, port = _split_host_port(authority, 80)
                path = "/" + rest
            if not self.policy.allows(host):
                self._log_denial(method, host, port)
                raise _RefusedError(403, "Forbidden", denial_body(host))
            interceptor = self.intercept_for(host) if method == "CONNECT" else None
            if interceptor is not None:  # it opens its own connection, over TLS
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                await interceptor.handle(self, host, port, reader, writer)
                return
            try:
                up_reader, up_writer = await self.open_upstream(host, port)
            except OSError as err:  # TimeoutError among them
                raise _RefusedError(
                    502, "Bad Gateway", f"agentbox: cannot reach {host}:{port}: {err}\n"
                ) from err
        except _RefusedError as refused:
            await respond(writer, refused.status, refused.reason, refused.body)
            return
        except ValueError:
            await respond(writer, 400, "Bad Request", "agentbox: malformed request line\n")
            return
        self._clients.add(up_writer)
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                # the Host the policy allowed, whatever the client wrote (a shared front end
                # routes by it)
                kept = [
                    h
                    for h in lines[1:]
                    if h and h.split(":", 1)[0].strip().lower() not in _HOP_HEADERS
                ]
                authority = host if port == 80 else f"{host}:{port}"
                out = [f"{method} {path} {version}", f"Host: {authority}", *kept,
                       "Connection: close", "", ""]  # fmt: skip
                up_writer.write("\r\n".join(out).encode("latin-1"))
            await pipe_both(reader, writer, up_reader, up_writer)
        finally:
            self._clients.discard(up_writer)
            await close(up_writer)


CLOSE_SECONDS = 1.0


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a connection, and drop it when it does not close in ``CLOSE_SECONDS`` (a peer
    that neither reads what is left to send nor goes away)."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            await writer.wait_closed()
    except OSError:  # TimeoutError and ssl's errors among them
        writer.transport.abort()


async def respond(writer: asyncio.StreamWriter, status: int, reason: str, body: str) -> None:
    data = body.encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
        + data
    )
    with contextlib.suppress(OSError):
        await writer.drain()


async def _copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until ``src`` ends: a clean end is passed on as a half-close, a broken one (a reset)
    drops ``dst`` too, so that a far end waiting for more does not hold the tunnel open."""
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except OSError:
        dst.transport.abort()
        return
    with contextlib.suppress(OSError):
        if dst.can_write_eof():
            dst.write_eof()


async def pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until the upstream side is done (the client's half-close is passed on)."""
    await upload_during(reader, up_writer, _copy(up_reader, writer))


async def upload_during(reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
                        download: Awaitable[None]) -> None:  # fmt: skip
    """Copy what the client sends upstream while ``download`` runs, and stop with it."""
    upload = asyncio.ensure_future(_copy(reader, up_writer))
    try:
        await download
    finally:
        upload.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upload
