"""The answer to a request that carried a secret: its framing read as RFC 9112 section 6.3 says
(pure), the values scrubbed across piece boundaries, and the relay between real loopback
sockets, with bodies chunked, gzip-coded, close-delimited and cut off."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest

from agentbox_cli.egress.answer import Framing, Scrubber, UnreadableAnswerError, parse_head, relay
from agentbox_cli.egress.secrets import parse_secret
from agentbox_testing.http import chunked, dechunk, on_proxy_loop

SECRET = parse_secret("TOKEN@api.example.com", {"TOKEN": "s3cr3t-value"})
P = SECRET.placeholder.encode()
# the head without the server's framing, chunked on to an HTTP/1.1 client
OUT = b"HTTP/1.1 200 OK\r\nX-A: b\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("head", "method", "framing"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: b\r\n\r\n", b"GET",
         Framing(200, OUT, body=True, length=12, chunked_out=True)),
        # section 6.1: Transfer-Encoding overrides a Content-Length
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nX-A: b\r\n\r\n",
         b"GET", Framing(200, OUT, body=True, chunked=True, chunked_out=True)),
        # section 6.3 item 8: neither, so the body runs to the close
        (b"HTTP/1.1 200 OK\r\nX-A: b\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\r\n",
         b"GET", Framing(200, OUT, body=True, chunked_out=True)),
        # RFC 9110 section 8.4.1: gzip and x-gzip; deflate is the zlib format (RFC 1950)
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nX-A: b\r\n\r\n", b"GET",
         Framing(200, OUT, body=True, wbits=16 + zlib.MAX_WBITS, chunked_out=True)),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: identity, Deflate\r\nX-A: b\r\n\r\n", b"POST",
         Framing(200, OUT, body=True, wbits=zlib.MAX_WBITS, chunked_out=True)),
        # section 6.3 items 1 and 2: no body after HEAD, 1xx, 204, 304, whatever the fields say
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", b"HEAD",
         Framing(200, b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", body=False)),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n", b"GET",
         Framing(304, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n", body=False)),
        (b"HTTP/1.1 100 Continue\r\n\r\n", b"POST",
         Framing(100, b"HTTP/1.1 100 Continue\r\n\r\n", body=False)),
        # an HTTP/1.0 server's answer cannot be chunked (RFC 9112 section 7): to the close
        (b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\nX-A: b\r\n\r\n", b"GET",
         Framing(200, b"HTTP/1.0 200 OK\r\nX-A: b\r\nConnection: close\r\n\r\n", body=True,
                 length=12)),
    ],
    ids=["length", "chunked", "close", "gzip", "deflate", "head", "304", "100", "http-1.0"],
)  # fmt: skip
def test_an_answers_framing(head: bytes, method: bytes, framing: Framing) -> None:
    assert parse_head(head, method=method) == framing


def test_to_an_http_1_0_client_the_body_goes_up_to_the_close() -> None:
    framing = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", method=b"GET",
                         version=b"HTTP/1.0")  # fmt: skip
    assert framing == Framing(200, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", body=True,
                              length=1)  # fmt: skip


@pytest.mark.parametrize(
    ("head", "said"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\n", "in the content coding br"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip, gzip\r\n\r\n",
         "in the content coding gzip, gzip"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
         "in the transfer coding gzip, chunked"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
         "of a malformed Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "of a malformed Content-Length"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "a malformed status line"),
    ],
    ids=["br", "twice", "transfer-gzip", "two-lengths", "negative", "not-http"],
)  # fmt: skip
def test_an_answer_the_relay_cannot_read_is_named(head: bytes, said: str) -> None:
    with pytest.raises(UnreadableAnswerError) as err:
        parse_head(head, method=b"GET")
    assert str(err.value) == said


def test_a_value_split_between_pieces_is_scrubbed_wherever_the_cut_falls() -> None:
    data = b"a s3cr3t-value, and s3cr3t-values at the end: s3cr3t-value"
    want = data.replace(b"s3cr3t-value", P)
    for cut in range(len(data) + 1):
        scrubber = Scrubber([SECRET])
        assert scrubber.feed(data[:cut]) + scrubber.feed(data[cut:]) + scrubber.end() == want
    streamed = Scrubber([SECRET])  # a piece that ends in no beginning of a value goes whole
    assert streamed.feed(b"data: {s3cr3t-value}\n\n") == b"data: {" + P + b"}\n\n"
    assert streamed.feed(b"data: s3cr") == b"data: "  # "s3cr" could begin it: it waits
    assert streamed.feed(b"ew\n") == b"s3crew\n"
    one_by_one = Scrubber([SECRET])
    assert b"".join(one_by_one.feed(data[i : i + 1]) for i in range(len(data))) + \
        one_by_one.end() == want  # fmt: skip


def _relayed(answer: bytes, request: bytes = b"GET / HTTP/1.1\r\n\r\n") -> tuple[bytes, bool]:
    """What a client gets when ``answer`` is relayed to it between real loopback sockets, and
    whether its connection was reset."""

    async def main() -> tuple[bytes, bool]:
        async def origin(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(answer)
            await w.drain()
            w.close()

        async def proxy(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", ports[0])
            await relay(up_reader, w, [SECRET], request=request, head_timeout=5, host="a.test")
            up_writer.close()
            w.close()

        servers = [await asyncio.start_server(origin, "127.0.0.1", 0)]
        ports = [servers[0].sockets[0].getsockname()[1]]
        servers.append(await asyncio.start_server(proxy, "127.0.0.1", 0))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", servers[1].sockets[0].getsockname()[1]
        )
        got, reset = b"", False
        try:
            while piece := await reader.read(65536):
                got += piece
        except ConnectionResetError:
            reset = True
        writer.close()
        for server in servers:
            server.close()
        return got, reset

    return on_proxy_loop(main())


BODY = b'{"error": "bad token s3cr3t-value", "echo": "s3cr3t-value"}' * 300


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\nX-A: b\r\n\r\n%s" % (len(BODY), BODY),
        b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
        + chunked(BODY, 7, ext=b";a=1", trailer=b"T: s3cr3t-value\r\n"),
        b"HTTP/1.1 401 Unauthorized\r\nContent-Encoding: gzip\r\nX-A: b\r\n\r\n"
        + gzip.compress(BODY),
        b"HTTP/1.1 401 Unauthorized\r\nX-A: b\r\n\r\n" + BODY,
    ],
    ids=["length", "chunked", "gzip", "close"],
)  # fmt: skip
def test_a_body_that_echoes_the_value_reaches_the_sandbox_with_the_placeholder(
    answer: bytes,
) -> None:
    got, reset = _relayed(answer)
    assert not reset
    head, body = got.split(b"\r\n\r\n", 1)
    assert head == b"HTTP/1.1 401 Unauthorized\r\nX-A: b\r\nTransfer-Encoding: chunked\r\n" \
        b"Connection: close"  # fmt: skip
    assert dechunk(body) == (BODY.replace(b"s3cr3t-value", P), True)
    assert b"s3cr3t" not in got
    old, reset = _relayed(answer, b"GET / HTTP/1.0\r\n\r\n")
    assert (old, reset) == (b"HTTP/1.1 401 Unauthorized\r\nX-A: b\r\nConnection: close\r\n\r\n"
                            + BODY.replace(b"s3cr3t-value", P), False)  # fmt: skip


def test_interim_answers_and_a_head_without_body_pass_scrubbed() -> None:
    got, reset = _relayed(
        b"HTTP/1.1 100 Continue\r\nX-T: s3cr3t-value\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\nX-T: s3cr3t-value\r\n\r\nignored"
    )
    assert (got, reset) == (
        b"HTTP/1.1 100 Continue\r\nX-T: " + P + b"\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\nX-T: " + P + b"\r\n\r\n",
        False,
    )


def test_a_body_cut_off_is_a_reset_and_an_unreadable_one_a_502() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"
    got, reset = _relayed(cut)
    assert reset  # not a clean end the client could take for the whole body
    body, ended = dechunk(got.split(b"\r\n\r\n", 1)[1])
    assert b"only this".startswith(body)  # what came, unless the reset overtook it
    assert not ended  # no last chunk
    got, reset = _relayed(
        gzip.compress(b"a long body " * 100)[:40].join(
            [b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n", b""]
        )
    )  # the coding cut off
    assert reset
    assert not dechunk(got.split(b"\r\n\r\n", 1)[1])[1]
    got, reset = _relayed(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\ns3cr3t-value")
    assert not reset
    assert got.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert got.endswith(
        b"agentbox: the answer of a.test is in the content coding br, which "
        b"agentbox cannot check for the secret's value; it was not passed on\n"
    )
