"""The egress proxy's reading of the requests that carry a secret: TLS terminated with the
host's certificate from agentbox's CA, the placeholder replaced in the request's headers, and
the request sent on over TLS verified against the system's trust (``proxy.Interceptor``)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence

from agentbox_cli.egress.proxy import EgressProxy, close, pipe_both, respond
from agentbox_cli.egress.secrets import Secret, substitute

_DROPPED = (b"connection:", b"keep-alive:", b"proxy-connection:")


def one_request(head: bytes) -> bytes:
    """``head`` asking the server to close after it: each request of the connection must pass
    through ``substitute``, and only the first is read."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    kept = [lines[0], *(h for h in lines[1:] if not h.lower().startswith(_DROPPED))]
    return b"\r\n".join([*kept, b"Connection: close", b"", b""])


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
        try:
            await writer.start_tls(self.servers[host])
            async with asyncio.timeout(proxy.header_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError):
            return  # the client did not trust us, or sent no request: nothing was forwarded
        try:
            addr = await proxy.resolve(host, port)
            async with asyncio.timeout(proxy.connect_timeout):
                up_reader, up_writer = await asyncio.open_connection(
                    addr, port, ssl=self.upstream, server_hostname=host
                )
        except OSError as err:  # TimeoutError and ssl's errors among them: said, not dropped
            reason = getattr(err, "verify_message", None) or err.strerror or str(err)
            await respond(writer, 502, "Bad Gateway",
                          f"agentbox: cannot reach {host}:{port} over TLS: {reason}\n")  # fmt: skip
            return
        proxy.hold(up_writer)
        try:
            up_writer.write(one_request(substitute(head, self.secrets, host)))
            await pipe_both(reader, writer, up_reader, up_writer)
        finally:
            proxy.release(up_writer)
            await close(up_writer)


def server_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])  # one request at a time: no HTTP/2
    return context


def upstream_context() -> ssl.SSLContext:
    context = ssl.create_default_context()  # the system's trust (SSL_CERT_FILE honoured)
    context.set_alpn_protocols(["http/1.1"])
    return context
