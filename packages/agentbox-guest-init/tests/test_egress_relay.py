"""The guest init's relay from loopback to the host's egress proxy socket, against a real Unix
socket server (its fork and fixed port are exercised inside the real image: test_egress.py)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from agentbox_guest_init import egress


def _relay(socket_path: Path) -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    threading.Thread(target=egress.serve, args=(listener, str(socket_path)), daemon=True).start()
    return int(listener.getsockname()[1])


def _upper(socket_path: Path) -> threading.Thread:
    """A Unix socket server that answers each connection with its input in capitals, once the
    client has half-closed (so the relay must pass the half-close on)."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(socket_path))
    server.listen(16)

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
            conn.sendall(data.upper())
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := client.recv(4096):
            answer += chunk
        return answer


def test_the_relay_joins_each_client_to_the_proxy_socket(tmp_path: Path) -> None:
    sock = tmp_path / "proxy.sock"
    _upper(sock)
    port = _relay(sock)
    big = b"connect example.test:443\n" * 10000  # more than one chunk each way
    assert _exchange(port, big) == big.upper()
    answers: list[bytes] = []
    clients = [threading.Thread(target=lambda i=i: answers.append(_exchange(port, b"c%d" % i)))
               for i in range(50)]  # fmt: skip
    for c in clients:
        c.start()
    for c in clients:
        c.join(30)
    assert sorted(answers) == sorted(b"C%d" % i for i in range(50))


def test_a_missing_proxy_socket_is_a_502_naming_it(tmp_path: Path) -> None:
    sock = tmp_path / "gone.sock"
    answer = _exchange(_relay(sock), b"GET http://x.test/ HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert answer.endswith(
        f"agentbox: the egress proxy at {sock} is gone: No such file or directory\n".encode()
    )
