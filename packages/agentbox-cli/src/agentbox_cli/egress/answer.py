"""The answer to a request that carried a secret, passed back with every value turned into its
placeholder again, in its head and in its body: a server that echoes a credential (an error
page, a debugging endpoint) must not hand it to the sandbox.

The body is read in the framing the server chose (RFC 9112 section 6.3: none for a HEAD, 1xx,
204 or 304 answer; chunked; a Content-Length; else up to the close), its gzip or deflate content
coding (RFC 9110 section 8.4.1) is undone, and it goes on to the sandbox chunked (to an
HTTP/1.0 client: up to the close of the connection, which serves this one answer only,
``intercept.one_request``). The request asks for ``Accept-Encoding: identity``, so a decoded
body is the exception. An answer that cannot be read this way is refused with a 502 before
anything of it is sent; one that breaks off halfway ends without its last chunk (and with a
reset), so that its client cannot take it for complete.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from agentbox_cli.egress.proxy import respond
from agentbox_cli.egress.secrets import Secret, scrub

PIECE = 65536
# what the relay itself decides for the body it sends: dropped from the server's head
_FRAMING = (b"content-length", b"transfer-encoding", b"connection", b"keep-alive")
_CODINGS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS,
            b"deflate": zlib.MAX_WBITS}  # fmt: skip


class UnreadableAnswerError(Exception):
    """An answer whose body the relay cannot check for a value (said in the 502)."""


@dataclass(frozen=True, slots=True)
class Framing:
    """How an answer's body is read (``parse_head``), and the head it goes on with."""

    status: int
    head: bytes  # as received when it has no body; else without the framing headers
    body: bool
    chunked: bool = False
    length: int | None = None
    wbits: int | None = None  # zlib's window bits for the content coding, None for identity
    chunked_out: bool = False  # sent on chunked (else up to the close)


def _tokens(fields: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """The lower-cased items of the comma-separated list fields ``name`` (RFC 9110 5.6.1)."""
    return [t.strip().lower() for n, v in fields if n == name for t in v.split(b",") if t.strip()]


def parse_head(head: bytes, *, method: bytes, version: bytes = b"HTTP/1.1") -> Framing:
    """``head`` (a status line and header lines ending in a blank line) read as RFC 9112 says;
    ``method`` and ``version`` are the request's. ``UnreadableAnswerError``: a framing or
    coding it cannot undo."""
    status_line, *rest = head.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise UnreadableAnswerError("a malformed status line")
    status = int(parts[1])
    if method.upper() == b"HEAD" or status < 200 or status in (204, 304):
        return Framing(status, head, body=False)
    lines = [line for line in rest if line]
    fields = [(n.strip().lower(), v.strip()) for n, _, v in (x.partition(b":") for x in lines)]
    transfer = _tokens(fields, b"transfer-encoding")
    if transfer not in ([], [b"chunked"]):
        said = b", ".join(transfer).decode("latin-1")
        raise UnreadableAnswerError(f"in the transfer coding {said}")
    lengths = {v for n, v in fields if n == b"content-length"}
    length = None
    if not transfer and lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise UnreadableAnswerError("of a malformed Content-Length")
        length = int(next(iter(lengths)))
    coding = [c for c in _tokens(fields, b"content-encoding") if c != b"identity"]
    if len(coding) > 1 or (coding and coding[0] not in _CODINGS):
        said = b", ".join(coding).decode("latin-1")
        raise UnreadableAnswerError(f"in the content coding {said}")
    dropped = _FRAMING + ((b"content-encoding",) if coding else ())
    kept = [line for line, (name, _) in zip(lines, fields, strict=True) if name not in dropped]
    # chunked on to an HTTP/1.1 client, whose end it sees (a cut-off one has no last chunk)
    chunk = parts[0] == version == b"HTTP/1.1"
    framing = [b"Transfer-Encoding: chunked"] if chunk else []
    rewritten = b"\r\n".join([status_line, *kept, *framing, b"Connection: close", b"", b""])
    return Framing(status, rewritten, body=True, chunked=bool(transfer), length=length,
                   wbits=_CODINGS[coding[0]] if coding else None,
                   chunked_out=chunk)  # fmt: skip


class Scrubber:
    """Turns each value into its placeholder in a stream fed piece by piece: the end of a piece
    that begins a value (which the next piece could end) waits for that piece, and nothing
    else does, so a streamed answer's events (which end in a line break) go on at once."""

    def __init__(self, secrets: Iterable[Secret]) -> None:
        self._secrets = tuple(secrets)
        self._values = [s.value.encode() for s in self._secrets]
        self._keep = max(map(len, self._values), default=1) - 1
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        data = scrub(self._pending + data, self._secrets)
        cut = len(data) - self._held(data)
        self._pending = data[cut:]
        return data[:cut]

    def _held(self, data: bytes) -> int:
        """The length of the longest end of ``data`` that a value begins with."""
        for n in range(min(self._keep, len(data)), 0, -1):
            if any(value.startswith(data[-n:]) for value in self._values):
                return n
        return 0

    def end(self) -> bytes:
        rest, self._pending = scrub(self._pending, self._secrets), b""
        return rest


async def _exactly(reader: asyncio.StreamReader, size: int) -> AsyncIterator[bytes]:
    """``size`` bytes, each piece as it comes; an ``IncompleteReadError`` when they end early."""
    while size:
        piece = await reader.read(min(size, PIECE))
        if not piece:
            raise asyncio.IncompleteReadError(b"", size)
        size -= len(piece)
        yield piece


async def _pieces(reader: asyncio.StreamReader, framing: Framing) -> AsyncIterator[bytes]:
    """The body's bytes as the server framed them (without chunk sizes or trailers); an
    ``IncompleteReadError`` when it ends early."""
    if framing.chunked:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)  # ValueError: malformed
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, dropped
                    pass
                return
            async for piece in _exactly(reader, size):
                yield piece
            await reader.readexactly(2)
    elif framing.length is not None:
        async for piece in _exactly(reader, framing.length):
            yield piece
    else:
        while piece := await reader.read(PIECE):
            yield piece


async def relay(up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                secrets: Iterable[Secret], *, request: bytes, head_timeout: float,
                host: str) -> None:  # fmt: skip
    """Pass the answer on ``up_reader`` to ``request`` (its head) on to ``writer``, every value
    of ``secrets`` turned into its placeholder (interim 1xx answers too). A body that breaks
    off resets ``writer``."""
    secrets = tuple(secrets)
    line = request.split(b"\r\n", 1)[0].split(b" ")
    while True:
        async with asyncio.timeout(head_timeout):
            head = await up_reader.readuntil(b"\r\n\r\n")
        try:
            framing = parse_head(head, method=line[0], version=line[-1])
        except UnreadableAnswerError as why:
            await respond(writer, 502, "Bad Gateway",
                          f"agentbox: the answer of {host} is {why}, which agentbox cannot check "
                          "for the secret's value; it was not passed on\n")  # fmt: skip
            return
        writer.write(scrub(framing.head, secrets))
        if not 100 <= framing.status < 200 or framing.status == 101:
            break
    if framing.body:
        try:
            await _body(up_reader, writer, framing, Scrubber(secrets))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, zlib.error):
            _reset(writer)  # not a clean end, which the client could take for the whole
            return
    await writer.drain()


async def _body(up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framing: Framing,
                scrubber: Scrubber) -> None:  # fmt: skip
    def send(data: bytes) -> None:
        if data and framing.chunked_out:
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        elif data:
            writer.write(data)

    decoder = zlib.decompressobj(framing.wbits) if framing.wbits is not None else None
    async for piece in _pieces(up_reader, framing):
        send(scrubber.feed(decoder.decompress(piece) if decoder else piece))
        await writer.drain()
    if decoder:
        if not decoder.eof:
            raise zlib.error("the coded body ends early")
        send(scrubber.feed(decoder.flush()))
    send(scrubber.end())
    if framing.chunked_out:
        writer.write(b"0\r\n\r\n")


def _reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection, over TCP with a reset (SO_LINGER of 0: socket(7))."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
