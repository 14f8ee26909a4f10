"""The egress proxy's cost: time to first byte of a plain HTTP request through it, and of a
CONNECT tunnel's first answer, against a direct connection to the same loopback server.

The proxy is the one container mode serves for a task (agentbox_cli.egress.serve.ProxyThread,
on its Unix socket, in a thread of this process), with an allow-list naming the server; the
origin answers from a process of its own. Goal: <= 1.5x direct for plain HTTP. The in-sandbox relay
(the guest init's, one more local hop) is not part of this figure. Prints numbers; never fails
on them.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agentbox_cli.egress.policy import build_policy
from agentbox_cli.egress.serve import ProxyThread

RUNS = int(os.environ.get("BENCH_RUNS", "200"))


# the origin, in its own process as a remote server would be (not competing with the proxy's
# thread for this interpreter's lock): answers each request with "ok", then closes
ORIGIN = r"""
import http.server, sys
class Web(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Web)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def first_byte(connect: Callable[[], socket.socket], request: bytes, *,
               drain: bool = True) -> float:  # fmt: skip
    """Seconds from connecting to the first byte of the answer, as a client sees it (the
    rest is read to the end when ``drain``: a tunnel's stays open)."""
    start = time.perf_counter()
    with connect() as s:
        s.sendall(request)
        s.recv(1)
        elapsed = time.perf_counter() - start
        while drain and s.recv(65536):
            pass
    return elapsed


def main() -> int:
    origin = subprocess.Popen([sys.executable, "-c", ORIGIN], stdout=subprocess.PIPE, text=True)
    assert origin.stdout is not None
    port = int(origin.stdout.readline())
    policy = build_policy(configured_mode="allow", allow=["web.test"],
                          resolve=["web.test:127.0.0.1"])  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="agentbox-bench-") as tmp:
        proxy = ProxyThread(policy, Path(tmp) / "egress", Path(tmp) / "denied.jsonl")
        with proxy:
            sock = os.fspath(proxy.socket)

            def to_proxy() -> socket.socket:
                s = socket.socket(socket.AF_UNIX)
                s.connect(sock)
                return s

            def direct() -> float:
                return first_byte(lambda: socket.create_connection(("127.0.0.1", port)),
                                  b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")  # fmt: skip

            def through() -> float:
                return first_byte(to_proxy, f"GET http://web.test:{port}/ HTTP/1.1\r\nHost: "
                                  "web.test\r\n\r\n".encode())  # fmt: skip

            def tunnel() -> float:
                return first_byte(to_proxy, f"CONNECT web.test:{port} HTTP/1.1\r\n\r\n".encode(),
                                  drain=False)  # fmt: skip

            samples: dict[str, list[float]] = {"direct": [], "proxy": [], "tunnel": []}
            for _ in range(RUNS):  # interleaved, so that noise hits all alike
                samples["direct"].append(direct())
                samples["proxy"].append(through())
                samples["tunnel"].append(tunnel())
    origin.kill()
    origin.wait()
    base = statistics.median(samples["direct"])
    print(f"egress proxy, time to first byte, median of {RUNS} (goal: plain HTTP <= 1.5x)")
    for label, key in (("direct to the loopback server", "direct"),
                       ("HTTP GET through the proxy", "proxy"),
                       ("CONNECT through the proxy (its 200)", "tunnel")):  # fmt: skip
        ms = statistics.median(samples[key]) * 1000
        print(f"  {label:<38} {ms:7.3f} ms  {ms / (base * 1000):5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
