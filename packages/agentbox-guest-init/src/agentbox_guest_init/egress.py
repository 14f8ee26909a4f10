"""The sandbox's one way out under an allow-list: a relay from the loopback address that the
proxy variables name to the host's egress proxy, whose Unix socket the host bind-mounts in.

The task's network namespace has no interface but loopback (``podman run --network none``), so
a program that ignores ``HTTP_PROXY`` reaches nothing; one that honours it reaches this relay,
and the proxy on the host decides. The listener is bound before the command starts (no race),
then a forked child serves it, one pair of threads per connection, until the sandbox ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading

from agentbox_guest_init.contract import EGRESS_LISTEN

# only imported when the host asked for the relay (the contract's EGRESS_SOCKET)
BACKLOG = 512
CHUNK = 65536


def start(socket_path: str) -> int:
    """Bind the relay's listener, fork its server; the child's pid (the caller goes on)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(EGRESS_LISTEN)
    listener.listen(BACKLOG)
    child = os.fork()
    if child:
        listener.close()
        return child
    for name in ("SIGINT", "SIGHUP", "SIGQUIT", "SIGTSTP"):  # the terminal's, not ours
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    try:
        serve(listener, socket_path)
    finally:
        os._exit(0)


def serve(listener: socket.socket, socket_path: str) -> None:
    """Accept forever; each client is joined to a new connection to ``socket_path``."""
    import time

    while True:
        try:
            client, _ = listener.accept()
        except OSError:  # out of descriptors, an aborted connection: the next one may do
            time.sleep(0.05)
            continue
        try:
            threading.Thread(target=_join, args=(client, socket_path), daemon=True).start()
        except RuntimeError:  # no thread to be had (the sandbox's process limit): this one
            client.close()


def _join(client: socket.socket, socket_path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(socket_path)
    except OSError as err:
        body = f"agentbox: the egress proxy at {socket_path} is gone: {err.strerror}\n".encode()
        head = b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
        _send_quietly(client, head % len(body) + b"Connection: close\r\n\r\n" + body)
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy until ``src`` ends, then pass the end on (a half-close, so answers still flow)."""
    try:
        while True:
            try:
                data = src.recv(CHUNK)
            except ConnectionResetError:  # src is gone: so is what dst would answer it
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_RDWR)
                return
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send a last answer and end the connection so that the client reads it (what it sent is
    drained first: closing with unread input would reset the connection)."""
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        while sock.recv(CHUNK):
            pass
    except OSError:
        pass
