"""The egress proxy's cost: time to first byte of a plain HTTP request through it, of a
CONNECT tunnel's first answer, and of an HTTPS request it intercepts for a secret, against a
direct connection to the same loopback server.

The proxy is the one container mode serves for a task (agentbox_cli.egress.serve.ProxyThread,
on its Unix socket, in a thread of this process), with an allow-list naming the server; the
origins (HTTP, and HTTPS with a certificate of a bench CA made by openssl) answer from
processes of their own. Goals: <= 1.5x direct for plain HTTP, <= 2x for an intercepted HTTPS
request (two TLS handshakes instead of one). The in-sandbox relay (the guest init's, one more
local hop) is not part of these figures. Prints numbers; never fails on them.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agentbox_cli.egress import tls
from agentbox_cli.egress.policy import build_policy
from agentbox_cli.egress.secrets import parse_secret
from agentbox_cli.egress.serve import ProxyThread
from agentbox_state.runner import SubprocessRunner

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
if len(sys.argv) > 2:  # HTTPS: CERT KEY
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[1], sys.argv[2])
    server.socket = context.wrap_socket(server.socket, server_side=True)
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


def start_origin(*args: str) -> tuple[subprocess.Popen[str], int]:
    origin = subprocess.Popen([sys.executable, "-c", ORIGIN, *args], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    assert origin.stdout is not None
    return origin, int(origin.stdout.readline())


def main() -> int:
    if shutil.which("openssl") is None:
        print("egress bench skipped: it needs openssl (apt-get install openssl)")
        return 0
    with tempfile.TemporaryDirectory(prefix="agentbox-bench-") as tmp:
        runner = SubprocessRunner({"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        bench_ca = tls.ensure_ca(Path(tmp) / "bench-ca", runner)
        cert, key = tls.make_leaf(Path(tmp) / "bench-ca", Path(tmp) / "origin", "web.test", runner)
        os.environ["SSL_CERT_FILE"] = os.fspath(bench_ca)  # the proxy's upstream trust
        plain, port = start_origin()
        secure, tls_port = start_origin(os.fspath(cert), os.fspath(key))
        secret = parse_secret("BENCH_TOKEN@web.test", {"BENCH_TOKEN": "bench-value"})
        policy = build_policy(configured_mode="allow", allow=["web.test"],
                              resolve=["web.test:127.0.0.1"])  # fmt: skip
        proxy = ProxyThread(policy, Path(tmp) / "egress", Path(tmp) / "denied.jsonl",
                            secrets=(secret,), ca_dir=Path(tmp) / "ca",
                            tls_dir=Path(tmp) / "tls", runner=runner)  # fmt: skip
        with proxy:
            sock = os.fspath(proxy.socket)
            ours = ssl.create_default_context(cafile=os.fspath(Path(tmp) / "ca" / "ca.pem"))
            theirs = ssl.create_default_context(cafile=os.fspath(bench_ca))
            get = b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n"

            def to_proxy() -> socket.socket:
                s = socket.socket(socket.AF_UNIX)
                s.connect(sock)
                return s

            def intercepted() -> socket.socket:
                s = to_proxy()
                s.sendall(f"CONNECT web.test:{tls_port} HTTP/1.1\r\n\r\n".encode())
                while not s.recv(4096).endswith(b"\r\n\r\n"):
                    pass
                return ours.wrap_socket(s, server_hostname="web.test")

            cases: dict[str, Callable[[], float]] = {
                "direct": lambda: first_byte(
                    lambda: socket.create_connection(("127.0.0.1", port)), get),
                "proxy": lambda: first_byte(to_proxy, f"GET http://web.test:{port}/ HTTP/1.1"
                                            "\r\nHost: web.test\r\n\r\n".encode()),
                "tunnel": lambda: first_byte(
                    to_proxy, f"CONNECT web.test:{port} HTTP/1.1\r\n\r\n".encode(),
                    drain=False),
                "direct-tls": lambda: first_byte(lambda: theirs.wrap_socket(
                    socket.create_connection(("127.0.0.1", tls_port)),
                    server_hostname="web.test"), get),
                "intercepted": lambda: first_byte(intercepted, get),
            }  # fmt: skip
            samples: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(RUNS):  # interleaved, so that noise hits all alike
                for name, case in cases.items():
                    samples[name].append(case())
        for origin in (plain, secure):
            origin.kill()
            origin.wait()
    print(f"egress proxy, time to first byte, median of {RUNS} (goals: plain HTTP <= 1.5x, "
          "intercepted HTTPS <= 2x)")  # fmt: skip
    rows = (("direct to the loopback server", "direct", "direct"),
            ("HTTP GET through the proxy", "proxy", "direct"),
            ("CONNECT through the proxy (its 200)", "tunnel", "direct"),
            ("HTTPS direct (TLS handshake + GET)", "direct-tls", "direct-tls"),
            ("HTTPS intercepted for a secret", "intercepted", "direct-tls"))  # fmt: skip
    for label, measured, against in rows:
        ms = statistics.median(samples[measured]) * 1000
        base = statistics.median(samples[against]) * 1000
        print(f"  {label:<38} {ms:7.3f} ms  {ms / base:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
