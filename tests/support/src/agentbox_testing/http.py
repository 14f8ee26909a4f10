"""HTTP/1.1's chunked transfer coding (RFC 9112 section 7.1), for tests that serve it or read
it: what a server sends, and what a client gets out of it."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TypeVar

T = TypeVar("T")


def chunked(data: bytes, size: int = 5, *, ext: bytes = b"", trailer: bytes = b"") -> bytes:
    """``data`` in chunks of ``size`` bytes (each with the chunk extension ``ext``, such as
    ``b";a=1"``), the last chunk, the ``trailer`` field lines (each ending in CRLF) and the
    blank line."""
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in pieces) + b"0\r\n" + trailer \
        + b"\r\n"  # fmt: skip


def dechunk(data: bytes) -> tuple[bytes, bool]:
    """The bytes of a chunked body, and whether it ended with its last chunk and blank line."""
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            return out, data == b"\r\n"
        out, data = out + data[:size], data[size + 2 :]
    return out, False


def on_proxy_loop(main: Coroutine[object, object, T]) -> T:
    """Run ``main`` on the event loop the egress proxy serves a task on
    (``agentbox_cli.egress.serve.new_loop``), so that its tests hold for that loop."""
    import asyncio

    from agentbox_cli.egress.serve import new_loop

    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main)
