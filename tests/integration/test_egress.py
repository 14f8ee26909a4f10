"""Container mode's network policy, for real: the workstation image as the ordinary test user,
test servers on the host's loopback that only agentbox's egress proxy can reach (it resolves
their test names through `[network] resolve`), and what the sandbox's programs see."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conftest import UserBox

pytestmark = [pytest.mark.root, pytest.mark.podman, pytest.mark.image]

# Run inside the sandbox by the image's python3: each probe prints one line `NAME RESULT`.
PROBE = r"""
import json, os, socket, sys, threading, urllib.request

web, raw = int(sys.argv[1]), int(sys.argv[2])
def line(name, value):
    print(name, value, flush=True)

def get(url):
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return f"{r.status} {r.read().decode()}"
    except urllib.error.HTTPError as e:
        return f"{e.code} {e.read().decode()!r}"
    except Exception as e:
        return f"failed {type(e).__name__}"

def direct(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return "connected"
    except OSError as e:
        return f"failed {type(e).__name__}"

line("interfaces", ",".join(sorted(os.listdir("/sys/class/net"))))
line("proxy", os.environ.get("HTTPS_PROXY", "-"))
try:
    socket.getaddrinfo("web.test", 80)
    line("dns", "resolved")
except OSError as e:
    line("dns", f"failed {type(e).__name__}")
line("allowed", get(f"http://web.test:{web}/hello"))
line("denied", get(f"http://denied.test:{web}/"))
line("direct-web", direct("web.test", web))
line("direct-raw", direct(sys.argv[3], raw) if sys.argv[3] != "-" else "no-host-address")
if os.environ.get("HTTPS_PROXY"):
    # a raw TCP tunnel through the proxy (CONNECT), to a host the policy allows
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(f"CONNECT raw.test:{raw} HTTP/1.1\r\n\r\n".encode())
    head = s.recv(4096).split(b"\r\n")[0].decode()
    s.sendall(b"ping")
    line("tunnel", f"{head} {s.recv(4).decode()}")
    if len(sys.argv) > 4:  # load: a stalled client and 200 requests at once
        stalled = socket.create_connection(("127.0.0.1", 3128), timeout=10)
        stalled.sendall(b"GET http://web.test/ HTTP/1.1\r\n")  # never finishes its head
        results = []
        def one(i):
            results.append(get(f"http://web.test:{web}/n{i}"))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
        for t in threads: t.start()
        for t in threads: t.join(60)
        ok = sum(r.startswith("200 ") for r in results)
        failed = sorted(set(r for r in results if not r.startswith("200 ")))
        line("load", f"{ok}/200 while stalled={stalled.fileno() >= 0} {failed}")
"""


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # the load test's 200 connections arrive at once (default: 5)


class _Web(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"web says {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[tuple[int, int]]:
    """An HTTP server and a raw TCP echo server on the host (every address of it)."""
    web = _Server(("0.0.0.0", 0), _Web)
    raw = socket.create_server(("0.0.0.0", 0), backlog=64)

    def echo() -> None:
        while True:
            try:
                conn, _ = raw.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data)

    threading.Thread(target=web.serve_forever, daemon=True).start()
    threading.Thread(target=echo, daemon=True).start()
    yield web.server_address[1], raw.getsockname()[1]
    web.shutdown()
    web.server_close()
    raw.close()


def host_address() -> str:
    """An address of this host that is not loopback ("-" when it has none): what a sandbox
    with the host's network could reach the test servers at."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only the route is looked up
            return str(s.getsockname()[0])
        except OSError:
            return "-"


@pytest.fixture
def egress_box(user_image: str, user_box: Callable[..., UserBox]) -> Iterator[UserBox]:
    """A project of the test user whose agentbox.toml resolves the test names to loopback (in
    the user's own config dir: XDG_CONFIG_HOME would move Podman's configuration too)."""
    box = user_box()
    config = Path(box.pw.pw_dir) / ".config/agentbox/agentbox.toml"
    assert not config.exists(), f"{config}: the test user has a config of its own"
    for d in (config.parent.parent, config.parent):
        d.mkdir(exist_ok=True)
        os.chown(d, box.pw.pw_uid, box.pw.pw_gid)
    names = ("web", "raw", "denied", "secret", "other")
    config.write_text("[network]\nresolve = [" + ", ".join(f'"{n}.test:127.0.0.1"' for n in names)
                      + "]\n")  # fmt: skip
    (box.project / "probe.py").write_text(PROBE)
    try:
        yield box
    finally:
        config.unlink()
        box.run("internal", "sidecar-reap", "--", str(box.state_dir), "localhost/agentbox:latest",
                "0")  # fmt: skip


def probe(box: UserBox, ports: tuple[int, int], *flags: str, load: bool = False
          ) -> tuple[dict[str, str], str]:  # fmt: skip
    args = [str(ports[0]), str(ports[1]), host_address(), *(["load"] if load else [])]
    done = box.run("container", *flags, "--", "python3", "/workspace/probe.py", *args)
    assert done.returncode == 0, done.stderr
    seen = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    return seen, done.stderr


def test_an_allow_list_lets_only_its_hosts_through_the_proxy(
    egress_box: UserBox, servers: tuple[int, int]
) -> None:
    seen, err = probe(egress_box, servers, "--allow", "web.test", "--allow", "raw.test",
                      load=True)  # fmt: skip
    assert seen["interfaces"] == "lo"  # no route out at all
    assert seen["proxy"] == "http://127.0.0.1:3128"
    assert seen["dns"] == "failed gaierror"
    assert seen["allowed"] == "200 web says /hello"
    assert seen["denied"] == (
        "403 'agentbox: the network policy denies denied.test\\nhint: add it to [network] allow "
        '= ["denied.test"] in agentbox.toml, or pass --allow denied.test\\n\''
    )
    assert seen["direct-web"].startswith("failed ")
    assert seen["direct-raw"] in ("failed OSError", "failed ConnectionRefusedError",
                                  "failed TimeoutError", "no-host-address")  # fmt: skip
    assert seen["direct-raw"] != "connected"
    assert seen["tunnel"] == "HTTP/1.1 200 Connection established ping"
    assert seen["load"] == "200/200 while stalled=True []"
    log = egress_box.state_dir / "egress"
    [denied] = list(log.glob("*.denied.jsonl"))
    entry = json.loads(denied.read_text())
    assert (entry["method"], entry["host"], entry["port"]) == ("GET", "denied.test", servers[0])
    assert f"agentbox: the network policy denied 1 request(s) of this task, to denied.test; " \
        f"each is in {denied}\n" in err  # fmt: skip
    assert [p.name for p in log.iterdir()] == [denied.name]  # the socket dir is gone


def test_network_none_has_loopback_only_and_no_proxy(
    egress_box: UserBox, servers: tuple[int, int]
) -> None:
    seen, _ = probe(egress_box, servers, "--net", "none")
    assert seen["interfaces"] == "lo"
    assert seen["proxy"] == "-"
    assert seen["dns"] == "failed gaierror"
    assert seen["allowed"].startswith("failed ")  # no proxy, no DNS: nothing answers
    assert seen["direct-raw"] != "connected"
    assert "tunnel" not in seen


def test_network_open_is_the_hosts_network_as_before(
    egress_box: UserBox, servers: tuple[int, int]
) -> None:
    seen, _ = probe(egress_box, servers)
    assert seen["interfaces"] != "lo"  # Podman's own interface besides loopback
    assert seen["proxy"] == "-"


def test_ps_names_the_denial_log_of_a_task_under_an_allow_list(egress_box: UserBox) -> None:
    import subprocess
    import time

    task = subprocess.Popen(egress_box.argv("container", "--allow", "web.test", "--", "sleep",
                                            "5"),
                            cwd=egress_box.project, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            listed = egress_box.run("ps", "--json")
            assert listed.returncode == 0, listed.stderr
            mine = [t for t in json.loads(listed.stdout)["tasks"]
                    if t["project"] == str(egress_box.project)]  # fmt: skip
            if mine:
                break
            assert time.monotonic() < deadline, "the task never showed in agentbox ps"
            assert task.poll() is None, task.stderr
            time.sleep(0.3)
        [shown] = mine
        logs = [h["what"] for h in shown["holds"] if h["kind"] == "egress-log"]
        assert logs == [f"{egress_box.state_dir}/egress/{shown['name']}.denied.jsonl"]
    finally:
        _, err = task.communicate(timeout=60)
        assert task.returncode == 0, err


SECRET_PROBE = r"""
import glob, os, ssl, sys, urllib.request

port = int(sys.argv[1])
def ask(host, **kw):
    req = urllib.request.Request(f"https://{host}:{port}/",
                                 headers={"Authorization": "Bearer " + os.environ["TOKEN"]})
    with urllib.request.urlopen(req, timeout=20, **kw) as r:
        return r.read().decode()
print("secret", ask("secret.test"))  # trusts agentbox's CA through SSL_CERT_FILE
# another allowed host: tunnelled untouched, so the client checks the test server itself
print("other", ask("other.test", context=ssl._create_unverified_context()))
print("placeholder", os.environ["TOKEN"])
# everything the sandbox's processes have in their environment, for the host to search
with open("/workspace/environ-dump", "wb") as out:
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            out.write(open(path, "rb").read() + b"\n")
        except OSError:
            pass
"""


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[str]]]:
    """An HTTPS server on the host for secret.test and other.test, with a test CA of its own
    (made by openssl); it records the Authorization header of each request."""
    import ssl
    import subprocess

    ca = tmp_path / "test-ca"
    ca.mkdir()

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, cwd=ca)

    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA",
        "-addext", "basicConstraints=critical,CA:TRUE")  # fmt: skip
    (ca / "leaf.cnf").write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = secret.test\n[ext]\n"
        "subjectAltName = DNS:secret.test,DNS:other.test\n"
    )
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-config", "leaf.cnf")  # fmt: skip
    run("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", "7", "-days", "2", "-extfile", "leaf.cnf", "-extensions", "ext",
        "-out", "leaf.pem")  # fmt: skip
    seen: list[str] = []

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "-")
            seen.append(auth)
            # a digest, not the header: what the server answers enters the sandbox
            body = hashlib.sha256(auth.encode()).hexdigest().encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Echo)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca / "leaf.pem", ca / "leaf.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="agentbox-test-ca-") as public:
        os.chmod(public, 0o755)  # agentbox's proxy runs as the test user and must read it
        trust = Path(public) / "ca.pem"
        shutil.copy(ca / "ca.pem", trust)
        trust.chmod(0o644)
        yield server.server_address[1], trust, seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("source", ["--secret", "[secrets] files"])
def test_a_secret_reaches_only_its_host_and_never_enters_the_sandbox(
    egress_box: UserBox, https_server: tuple[int, Path, list[str]], source: str
) -> None:
    port, test_ca, seen = https_server
    value = "agentbox-test-value-" + os.urandom(8).hex()
    (egress_box.project / "secret_probe.py").write_text(SECRET_PROBE)
    flags: tuple[str, ...] = ("--secret", "TOKEN@secret.test")
    env = {"TOKEN": value}
    if source == "[secrets] files":  # the value from a file of the user's, named in the config
        key = Path(egress_box.pw.pw_dir) / ".config/agentbox-test-token"
        key.write_text(value + "\n")
        key.chmod(0o600)
        os.chown(key, egress_box.pw.pw_uid, egress_box.pw.pw_gid)
        config = Path(egress_box.pw.pw_dir) / ".config/agentbox/agentbox.toml"
        with config.open("a") as f:
            f.write(f'[secrets]\nfiles = ["TOKEN@secret.test={key}"]\n')
        flags, env = (), {}
    done = egress_box.run(
        "--debug", "container", *flags, "--allow", "other.test", "--",
        "python3", "/workspace/secret_probe.py", str(port),
        SSL_CERT_FILE=str(test_ca), **env,  # agentbox's proxy trusts the test server
    )  # fmt: skip
    if source == "[secrets] files":
        key.unlink()  # read when the task started; no test after this one needs it
    assert done.returncode == 0, "\n".join(
        line for line in done.stderr.splitlines() if "level=" not in line)  # fmt: skip
    said = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    placeholder = said["placeholder"]
    assert placeholder.startswith("agentbox-secret-TOKEN-")

    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    assert said["secret"] == digest(f"Bearer {value}")  # the server got the real value
    assert said["other"] == digest(f"Bearer {placeholder}")  # a host not listed: the placeholder
    assert seen == [f"Bearer {value}", f"Bearer {placeholder}"]
    # nowhere else: the sandbox's environments, its writable paths, the state dir, the output
    dump = (egress_box.project / "environ-dump").read_bytes()
    assert placeholder.encode() in dump  # the dump holds the sandbox's environments
    assert value.encode() not in dump
    assert value not in done.stdout + done.stderr
    assert placeholder in done.stderr  # --debug shows the placeholder, as podman gets it
    home = Path(egress_box.pw.pw_dir)
    # the task's writable paths and agentbox's whole state (logs, the CA, every workspace)
    for root in (egress_box.project, home / ".codex", home / ".pi", home / ".local/state"):
        hits = subprocess.run(["grep", "-rlF", "--", value, str(root)], capture_output=True,
                              text=True, check=False)  # fmt: skip
        assert hits.stdout == "", hits.stdout
    ca_dir = home / ".local/state/agentbox/egress-ca"
    assert (ca_dir / "ca.key").stat().st_mode & 0o777 == 0o600
    assert not list((egress_box.state_dir / "egress").glob("*.tls"))  # its certificates: gone


NIX_PROBE = r"""
echo "store $(ls /nix/store | tr '\n' ' ')"
if touch /nix/.agentbox-probe 2>/dev/null; then echo "nix writable"; else echo "nix read-only"; fi
echo "add $(nix-store --add /workspace/probe.py 2>&1 | tr '\n' ' ')"
echo "socket-dir $(ls -A /nix/var/nix/daemon-socket 2>&1 | tr '\n' ' ')"
"""


def test_under_a_policy_the_task_has_no_nix_daemon_unless_the_user_says_so(
    egress_box: UserBox,
) -> None:
    """The daemon fetches with the host's network: a task under --net none gets none, even
    while the project's sidecar serves another task (its socket is hidden), and its Nix
    clients say why; --nix-outside-policy gives it the daemon."""
    (egress_box.project / "nix-probe.sh").write_text(NIX_PROBE)

    def seen(*flags: str) -> dict[str, str]:
        done = egress_box.run("container", "--net", "none", *flags, "--", "sh",
                              "/workspace/nix-probe.sh")  # fmt: skip
        assert done.returncode == 0, done.stderr
        return dict(line.split(" ", 1) for line in done.stdout.splitlines())

    # the daemon beside this one (its first nix-store waits for it) stays for the idle grace
    given = seen("--nix-outside-policy")  # the socket listed once nix-store had the daemon
    assert re.fullmatch(r"/nix/store/[0-9a-z]{32}-probe\.py ", given["add"]), given
    assert given["socket-dir"] == "socket "
    without = seen()
    assert without["socket-dir"] == ""  # the running daemon's socket is not there
    # what the store holds is there (the path the daemon added for the first task among it)
    assert given["add"].split("/")[-1].strip() in without["store"].split(), without
    assert without["nix"] == "read-only"
    assert without["add"] == (
        "nix-store: agentbox: this sandbox has no Nix daemon: under a network policy the "
        "project's daemon would fetch with the host's network, outside the policy. On the host, "
        "`agentbox container --nix-outside-policy` gives the sandbox that daemon anyway; "
        "`--net open` has no policy "
    )
    listed = egress_box.podman("ps", "--filter", f"label=agentbox.workspace={egress_box.key}",
                               "--format", "{{.Names}}").split()  # fmt: skip
    assert listed == [f"agentbox-nix-{egress_box.key}"]  # it ran all along, for the first task
