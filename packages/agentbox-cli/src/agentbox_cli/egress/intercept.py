"""The egress proxy's reading of the requests that carry a secret: TLS terminated with the
host's certificate from agentbox's CA, the placeholder replaced in the request's headers, the
request sent on over TLS verified against the system's trust, and its answer passed back with
the values turned into placeholders again (``answer``; ``proxy.Interceptor``)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence

from agentbox_cli.egress.answer import relay
from agentbox_cli.egress.proxy import EgressProxy, close, respond, upload_during
from agentbox_cli.egress.secrets import Secret, substitute

# hop-by-hop fields, and the codings the client accepts: the answer comes as it is, so that
# the relay can read it for the values (RFC 9110 section 12.5.3: identity is always acceptable)
_DROPPED = (b"connection:", b"keep-alive:", b"proxy-connection:", b"accept-encoding:")

Upstream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def one_request(head: bytes) -> bytes:
    """``head`` asking the server to close after it, in no content coding: each request of
    the connection must pass through ``substitute``, and only the first is read."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    kept = [lines[0], *(h for h in lines[1:] if not h.lower().startswith(_DROPPED))]
    return b"\r\n".join([*kept, b"Accept-Encoding: identity", b"Connection: close", b"", b""])


class SecretInterceptor:
    """Serves the ``CONNECT`` of a host that a secret names."""

    def __init__(self, secrets: Sequence[Secret], servers: Mapping[str, ssl.SSLContext],
                 upstream: ssl.SSLContext) -> None:  # fmt: skip
        self.secrets = tuple(secrets)
        self.servers = dict(servers)
        self.upstream = upstream

    def intercept_for(self, host: str) -> SecretInterceptor | None:
        return self if host in self.servers else None

    async def handle(self, proxy: EgressProxy, host: str, port: int,
                     reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:  # fmt: skip
        if reader._buffer:  # type: ignore[attr-defined]  # sent before our 200: not TLS to us
            return
        # the server's connection is made while the client's handshake runs (it carries no
        # secret yet): the first byte waits for the slower of the two, not for both
        upstream = asyncio.ensure_future(self._connect(proxy, host, port))
        try:
            await self._serve(proxy, host, port, reader, writer, upstream)
        finally:
            upstream.cancel()
            [made] = await asyncio.gather(upstream, return_exceptions=True)
            if isinstance(made, tuple):
                proxy.release(made[1])
                await close(made[1])

    async def _connect(self, proxy: EgressProxy, host: str, port: int) -> Upstream:
        addr = await proxy.resolve(host, port)
        async with asyncio.timeout(proxy.connect_timeout):
            up = await asyncio.open_connection(addr, port, ssl=self.upstream,
                                               server_hostname=host)  # fmt: skip
        proxy.hold(up[1])
        return up

    async def _serve(self, proxy: EgressProxy, host: str, port: int,
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     upstream: asyncio.Future[Upstream]) -> None:  # fmt: skip
        try:
            await writer.start_tls(self.servers[host],
                                   ssl_handshake_timeout=proxy.header_timeout)  # fmt: skip
            async with asyncio.timeout(proxy.header_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return  # the client did not trust us, or sent no request: nothing was forwarded
        refused = misdirected(head, host, port)
        if refused is not None:
            await respond(writer, *refused)
            return
        try:
            up_reader, up_writer = await upstream
        except OSError as err:  # TimeoutError and ssl's errors among them: said, not dropped
            reason = getattr(err, "verify_message", None) or err.strerror or str(err)
            await respond(writer, 502, "Bad Gateway",
                          f"agentbox: cannot reach {host}:{port} over TLS: {reason}\n")  # fmt: skip
            return
        try:
            up_writer.write(one_request(substitute(head, self.secrets, host)))
            await up_writer.drain()
            # the answer goes back with any value turned into its placeholder again
            answer = relay(up_reader, writer, self.secrets, request=head,
                           head_timeout=proxy.connect_timeout * 6, host=host)  # fmt: skip
            await upload_during(reader, up_writer, answer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass


def misdirected(head: bytes, host: str, port: int) -> tuple[int, str, str] | None:
    """Why a request read from the tunnel to ``host:port`` may not go on, or None: its Host
    (or absolute URL) must name that host (a shared front end routes by it, so another name
    would carry the secret to another site), and TRACE, which echoes the request, is refused."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return 400, "Bad Request", "agentbox: malformed request line\n"
    if parts[0].upper() == b"TRACE":
        return 405, "Method Not Allowed", "agentbox: TRACE would echo a secret\n"
    hosts = [h.split(b":", 1)[1].strip() for h in lines[1:] if h.lower().startswith(b"host:")]
    target = parts[1]
    if target.lower().startswith(b"https://"):
        hosts.append(target[len(b"https://") :].split(b"/", 1)[0])
    allowed = {host.encode(), f"{host}:{port}".encode()}
    if not hosts:
        return 400, "Bad Request", "agentbox: the request names no host\n"
    if any(h.lower() not in allowed for h in hosts):
        return 421, "Misdirected Request", f"agentbox: this connection is to {host} only\n"
    return None


def server_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])  # one request at a time: no HTTP/2
    return context


def upstream_context() -> ssl.SSLContext:
    context = ssl.create_default_context()  # the system's trust (SSL_CERT_FILE honoured)
    context.set_alpn_protocols(["http/1.1"])
    return context
