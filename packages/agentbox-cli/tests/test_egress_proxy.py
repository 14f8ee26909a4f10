"""The egress proxy against real loopback servers: forward, tunnel, deny, the interception
seam, and its bounds (a stalled client, many at once, the connection cap)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentbox_cli.egress.policy import build_policy
from agentbox_cli.egress.proxy import EgressProxy
from agentbox_cli.egress.serve import new_loop
from agentbox_testing.http import on_proxy_loop


async def _origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                  slow: float = 0.0) -> None:  # fmt: skip
    """An HTTP server that answers with its request line (``slow`` seconds after it)."""
    head = await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(slow)
    line = head.split(b"\r\n", 1)[0]
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                 % (len(line), line))  # fmt: skip
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A raw TCP server that sends back what it gets."""
    while data := await reader.read(4096):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _request(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


async def _servers(tmp_path: Path, *, slow: float = 0.0,
                   **kw: object) -> AsyncIterator[tuple[int, int, int, Path]]:  # fmt: skip
    """The proxy, the origin (answering ``slow`` seconds after each request) and the echo
    server's ports, and the denial log."""
    origin = await asyncio.start_server(functools.partial(_origin, slow=slow), "127.0.0.1", 0,
                                        backlog=256)  # fmt: skip
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    policy = build_policy(mode="allow", allow=["web.test", "*.echo.test"],
                          resolve=["web.test:127.0.0.1", "raw.echo.test:127.0.0.1",
                                   "denied.test:127.0.0.1"])  # fmt: skip
    log = tmp_path / "denials.jsonl"
    egress = EgressProxy(policy, denial_log=log, **kw)  # type: ignore[arg-type]
    proxy = await egress.serve_tcp(backlog=256)
    ports = [s.sockets[0].getsockname()[1] for s in (proxy, origin, echo)]
    yield ports[0], ports[1], ports[2], log
    while egress.active:  # let the proxy's handlers finish closing their sockets
        await asyncio.sleep(0.01)
    for server in (proxy, origin, echo):
        server.close()
        await server.wait_closed()


def test_forward_deny_and_tunnel(tmp_path: Path) -> None:
    async def main() -> None:
        async for proxy, web, echo, log in _servers(tmp_path):
            head = (f"GET http://web.test:{web}/a?b HTTP/1.1\r\nHost: web.test\r\n"
                    "Proxy-Connection: keep-alive\r\n\r\n")  # fmt: skip
            ok = await _request(proxy, head.encode())
            assert ok.startswith(b"HTTP/1.1 200 OK")
            assert ok.endswith(b"GET /a?b HTTP/1.1")  # origin form, hop headers dropped
            denied = await _request(proxy, f"GET http://denied.test:{web}/ HTTP/1.1\r\n\r\n"
                                    .encode())  # fmt: skip
            assert denied.startswith(b"HTTP/1.1 403 Forbidden")
            assert denied.endswith(
                b"agentbox: the network policy denies denied.test\n"
                b'hint: add it to [network] allow = ["denied.test"] in agentbox.toml, or pass '
                b"--allow denied.test\n"
            )
            entry = json.loads(log.read_text())
            assert (entry["method"], entry["host"], entry["port"]) == ("GET", "denied.test", web)
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
            writer.write(f"CONNECT raw.echo.test:{echo} HTTP/1.1\r\n\r\n".encode())
            established = await reader.readuntil(b"\r\n\r\n")
            assert established == b"HTTP/1.1 200 Connection established\r\n\r\n"
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            writer.close()
            await writer.wait_closed()
            literal = await _request(proxy, b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n")
            assert literal.startswith(b"HTTP/1.1 403")  # an address is no allowed name

    on_proxy_loop(main())


def test_intercept_for_gets_the_allowed_connect(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []

    class Greeter:
        async def handle(self, proxy: EgressProxy, host: str, port: int,
                         reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:  # fmt: skip
            seen.append((host, port))
            writer.write(b"intercepted")
            await writer.drain()

    def intercept_for(host: str) -> Greeter | None:
        return Greeter() if host == "raw.echo.test" else None

    async def main() -> None:
        async for proxy, _web, echo, _log in _servers(tmp_path, intercept_for=intercept_for):
            data = await _request(proxy, f"CONNECT raw.echo.test:{echo} HTTP/1.1\r\n\r\n"
                                  .encode())  # fmt: skip
            assert data == b"HTTP/1.1 200 Connection established\r\n\r\nintercepted"
            assert seen == [("raw.echo.test", echo)]

    on_proxy_loop(main())


def test_a_stalled_client_is_dropped_and_does_not_block_others(tmp_path: Path) -> None:
    async def main() -> None:
        async for proxy, web, _echo, _log in _servers(tmp_path, header_timeout=2.0):
            stalled_r, stalled_w = await asyncio.open_connection("127.0.0.1", proxy)
            stalled_w.write(b"GET http://web.test/ HTTP/1.1\r\n")  # never finishes its head
            await stalled_w.drain()
            ok = await _request(proxy, f"GET http://web.test:{web}/ HTTP/1.1\r\n\r\n".encode())
            assert ok.startswith(b"HTTP/1.1 200")
            assert not stalled_r.at_eof()  # served while the stalled one still waits
            answer = await asyncio.wait_for(stalled_r.read(), 10)
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
            stalled_w.close()
            await stalled_w.wait_closed()

    on_proxy_loop(main())


@pytest.mark.parametrize("cap", [512, 50], ids=["under-cap", "over-cap"])
def test_200_concurrent_requests(tmp_path: Path, cap: int) -> None:
    async def main() -> list[bytes]:
        answers: list[bytes] = []
        # the origin takes its time, so that the connections overlap however fast the
        # proxy's loop serves them
        async for proxy, web, _echo, _log in _servers(tmp_path, max_connections=cap, slow=0.2):
            head = f"GET http://web.test:{web}/ HTTP/1.1\r\n\r\n".encode()
            requests = asyncio.gather(*(_request(proxy, head) for _ in range(200)))
            answers = await asyncio.wait_for(requests, 60)
        return answers

    answers = on_proxy_loop(main())
    ok = sum(a.startswith(b"HTTP/1.1 200") for a in answers)
    busy = sum(a.startswith(b"HTTP/1.1 503 Service Unavailable") for a in answers)
    assert ok + busy == 200
    if cap == 512:
        assert busy == 0
    else:  # over the cap: refused with 503, never hung
        assert busy > 0
        assert ok >= 1


async def _host_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP server that answers with the Host header it got."""
    head = await reader.readuntil(b"\r\n\r\n")
    hosts = [h for h in head.split(b"\r\n") if h.lower().startswith(b"host:")]
    body = b"|".join(hosts)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize(
    ("request_head", "answer"),
    [
        (b"GET http://web.test:{port}/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
         b"HTTP/1.1 200 OK"),
        (b"CONNECT web.test:70000 HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"CONNECT web.test\x1b[2J:443 HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"CONNECT localhost.test:{port} HTTP/1.1\r\n\r\n", b"HTTP/1.1 502 Bad Gateway"),
    ],
    ids=["host-rewritten", "port-too-big", "escape-in-host", "private-address"],
)  # fmt: skip
def test_what_the_proxy_sends_on_is_what_the_policy_allowed(
    request_head: bytes, answer: bytes
) -> None:
    async def main() -> bytes:
        origin = await asyncio.start_server(_host_echo, "127.0.0.1", 0)
        port = origin.sockets[0].getsockname()[1]
        # localhost.test is allowed, but resolves (by the system) to nothing public
        policy = build_policy(mode="allow", allow=["web.test", "localhost.test"],
                              resolve=["web.test:127.0.0.1"])  # fmt: skip
        egress = EgressProxy(policy)
        proxy = await egress.serve_tcp()

        async def fake_lookup(*_: object, **__: object) -> list[tuple[object, ...]]:
            return [(2, 1, 6, "", ("127.0.0.1", port))]

        asyncio.get_running_loop().getaddrinfo = fake_lookup  # type: ignore[assignment,method-assign]
        got = await _request(proxy.sockets[0].getsockname()[1],
                             request_head.replace(b"{port}", str(port).encode()))  # fmt: skip
        for server in (proxy, origin):
            server.close()
            await server.wait_closed()
        return got.replace(str(port).encode(), b"{port}")

    got = on_proxy_loop(main())
    assert got.startswith(answer)
    if answer.endswith(b"200 OK"):  # the origin saw the allowed name, not the client's
        assert got.endswith(b"\r\n\r\nHost: web.test:{port}")


def test_only_allowed_users_may_use_the_proxy_socket(tmp_path: Path) -> None:
    import os

    from agentbox_cli.egress.serve import own_uids

    assert own_uids()(os.getuid())

    async def main(allowed: bool) -> bytes:
        seen: list[int] = []

        def peer_allowed(uid: int) -> bool:
            seen.append(uid)
            return allowed

        egress = EgressProxy(build_policy(mode="none"), peer_allowed=peer_allowed)
        server = await egress.serve_unix(tmp_path / "p.sock")
        reader, writer = await asyncio.open_unix_connection(tmp_path / "p.sock")
        writer.write(b"CONNECT x.test:443 HTTP/1.1\r\n\r\n")
        try:
            answer = await reader.read()
        except ConnectionResetError:  # closed with the request unread
            answer = b""
        writer.close()
        with contextlib.suppress(ConnectionResetError):
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
        assert seen == [os.getuid()]  # SO_PEERCRED: this process's own uid
        return answer

    assert on_proxy_loop(main(False)) == b""  # another user's process: closed, no answer
    assert on_proxy_loop(main(True)).startswith(b"HTTP/1.1 403 Forbidden")


def test_the_proxy_loop_reports_what_is_not_a_connections_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection's failure nobody awaited (uvloop leaves one behind when a TLS connect is
    cancelled: MagicStack/uvloop#437) is not reported on the user's terminal; anything else
    goes to asyncio's default report."""
    loop = new_loop()
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for error in (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
                          ConnectionResetError(104, "Connection reset by peer")):  # fmt: skip
                loop.call_exception_handler(
                    {"message": "Future exception was never retrieved", "exception": error}
                )
            assert caplog.records == []
            for bug in (KeyError("bug"), PermissionError(13, "not a connection's")):
                loop.call_exception_handler(
                    {"message": "Task exception was never retrieved", "exception": bug}
                )
        assert [r.getMessage().split("\n")[0] for r in caplog.records] == [
            "Task exception was never retrieved"
        ] * 2
    finally:
        loop.close()
