"""Secrets through the egress proxy: their parsing and refusals (pure), the openssl command
lines (req(1), x509(1)), and a real TLS origin on loopback that sees the value only where the
secret's host is asked, with certificates made by the real openssl."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

import pytest

from agentbox_cli.egress import intercept, tls
from agentbox_cli.egress.policy import build_policy
from agentbox_cli.egress.proxy import EgressProxy
from agentbox_cli.egress.secrets import (
    gather,
    parse_secret,
    read_secret_file,
    scrub,
    substitute,
)
from agentbox_state.errors import UsageError
from agentbox_state.runner import SubprocessRunner
from agentbox_testing import require
from agentbox_testing.http import chunked, dechunk, on_proxy_loop

ENV = {"TOKEN": "s3cr3t-value", "EMPTY": ""}


def test_a_secret_is_read_from_the_environment_and_replaced_in_headers_only() -> None:
    s = parse_secret("TOKEN@api.example.com,Up.example.com", ENV)
    assert (s.name, s.hosts, s.value) == ("TOKEN", ("api.example.com", "up.example.com"),
                                          "s3cr3t-value")  # fmt: skip
    assert s.placeholder.startswith("agentbox-secret-TOKEN-")
    assert "s3cr3t" not in repr(s)  # never printed
    assert parse_secret("TOKEN@api.example.com", ENV).placeholder != s.placeholder
    head = (f"GET /?k={s.placeholder} HTTP/1.1\r\nAuthorization: Bearer {s.placeholder}\r\n"
            "\r\n").encode()  # fmt: skip
    assert (
        substitute(head, [s], "api.example.com")
        == (
            f"GET /?k={s.placeholder} HTTP/1.1\r\nAuthorization: Bearer s3cr3t-value\r\n\r\n"
        ).encode()
    )
    assert substitute(head, [s], "other.example.com") == head


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("TOKEN", "--secret 'TOKEN' is not NAME@HOST[,HOST...]"),
        ("1X@a.example", "--secret '1X@a.example' is not NAME@HOST[,HOST...]"),
        ("TOKEN@", "--secret 'TOKEN@' is not NAME@HOST[,HOST...]"),
        ("TOKEN@https://a.example", "--secret TOKEN: 'https://a.example' is not a host pattern"),
        ("TOKEN@*.example.com", "--secret TOKEN: *.example.com is a wildcard"),
        ("UNSET@a.example", "--secret UNSET: the environment variable UNSET is not set"),
        ("EMPTY@a.example", "--secret EMPTY: the environment variable EMPTY is empty"),
    ],
)  # fmt: skip
def test_bad_secrets_are_refused_naming_the_fix(spec: str, said: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_secret(spec, ENV)
    assert err.value.message == said
    assert err.value.hint


def test_a_secret_given_twice_is_refused() -> None:
    with pytest.raises(UsageError, match="--secret TOKEN is given twice"):
        gather(flags=["TOKEN@a.example", "TOKEN@b.example"], environ=ENV, workspace="/src")


def test_one_request_per_connection_in_no_content_coding() -> None:
    # RFC 9110 section 12.5.3: "identity" is always acceptable unless the field excludes it;
    # RFC 9112 section 9.6: "Connection: close" says the connection closes after this answer
    head = (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n"
            b"Accept-Encoding: gzip, br\r\n\r\n")  # fmt: skip
    assert intercept.one_request(head) == (
        b"GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
    )


def test_the_openssl_command_lines() -> None:
    # req(1): -x509 makes a self-signed certificate, -newkey ec with -pkeyopt
    # ec_paramgen_curve:NAME a new EC key, -nodes leaves it unencrypted, -addext adds an
    # extension; x509(1): -req signs a request with -CA/-CAkey, -extfile/-extensions
    ca = tls.ca_argv(Path("/c/ca.key"), Path("/c/ca.pem"))
    assert ca == ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "/c/ca.key", "-out",
                  "/c/ca.pem", "-days", "3650", "-subj", "/CN=agentbox egress proxy CA",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign"]  # fmt: skip
    req, sign = tls.leaf_argvs(Path("/c"), Path("/t"), "a.example")
    assert req == ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                   "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "/t/a.example.key",
                   "-out", "/t/a.example.csr", "-config", "/t/a.example.cnf"]  # fmt: skip
    serial = sign[sign.index("-set_serial") + 1]
    assert sign == ["openssl", "x509", "-req", "-in", "/t/a.example.csr", "-CA", "/c/ca.pem",
                    "-CAkey", "/c/ca.key", "-set_serial", serial, "-days", "30",
                    "-extfile", "/t/a.example.cnf", "-extensions", "ext",
                    "-out", "/t/a.example.pem"]  # fmt: skip
    assert serial.startswith("0x")
    assert len(serial) == 34


def needs_openssl() -> None:
    require(shutil.which("openssl") is not None, "openssl is missing (apt-get install openssl)")


def test_the_ca_is_made_once_with_a_private_key(tmp_path: Path) -> None:
    needs_openssl()
    runner = SubprocessRunner({"PATH": "/usr/bin:/bin"})
    cert = tls.ensure_ca(tmp_path / "ca", runner)
    key = tmp_path / "ca" / "ca.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ca").stat().st_mode & 0o777 == 0o700
    before = cert.read_bytes()
    assert tls.ensure_ca(tmp_path / "ca", runner).read_bytes() == before  # kept, not remade


seen_auth: list[bytes] = []  # the Authorization headers the origins got


async def _origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTPS server that notes the Authorization header it got and echoes it back in the
    body, in chunks of 5 bytes (RFC 9112 section 7.1), as a debugging endpoint might."""
    head = await reader.readuntil(b"\r\n\r\n")
    auth = next((line.split(b": ", 1)[1] for line in head.split(b"\r\n")
                 if line.lower().startswith(b"authorization:")), b"-")  # fmt: skip
    seen_auth.append(auth)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Echo: %s\r\n"
                 b"Connection: close\r\n\r\n%s" % (auth, chunked(auth)))  # fmt: skip
    await writer.drain()
    writer.close()


def test_the_proxy_puts_the_value_only_into_requests_to_the_secrets_hosts(tmp_path: Path) -> None:
    needs_openssl()
    runner = SubprocessRunner({"PATH": "/usr/bin:/bin"})
    # the origin's own certificate, from a CA of the test's (made with the same code)
    test_ca = tls.ensure_ca(tmp_path / "test-ca", runner)
    origin_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    origin_ctx.load_cert_chain(*map(str, tls.make_leaf(tmp_path / "test-ca", tmp_path / "o",
                                                       "secret.test", runner)))  # fmt: skip
    other_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    other_ctx.load_cert_chain(*map(str, tls.make_leaf(tmp_path / "test-ca", tmp_path / "o",
                                                      "other.test", runner)))  # fmt: skip
    # agentbox's CA, and its certificate for the secret's host
    ours = tls.ensure_ca(tmp_path / "ca", runner)
    cert, key = tls.make_leaf(tmp_path / "ca", tmp_path / "tls", "secret.test", runner)
    secret = parse_secret("TOKEN@secret.test", ENV)
    upstream = ssl.create_default_context(cafile=str(test_ca))
    interceptor = intercept.SecretInterceptor(
        [secret], {"secret.test": intercept.server_context(str(cert), str(key))}, upstream
    )
    policy = build_policy(mode="allow", allow=["secret.test", "other.test"],
                          resolve=["secret.test:127.0.0.1", "other.test:127.0.0.1"])  # fmt: skip

    async def ask(proxy: int, host: str, port: int, trust: Path) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
        writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\n\r\n".encode())
        assert await reader.readuntil(b"\r\n\r\n") == (
            b"HTTP/1.1 200 Connection established\r\n\r\n")  # fmt: skip
        await writer.start_tls(ssl.create_default_context(cafile=str(trust)),
                               server_hostname=host)  # fmt: skip
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                     f"{secret.placeholder}\r\n\r\n".encode())  # fmt: skip
        answer = await reader.read()
        writer.close()
        head, body = answer.split(b"\r\n\r\n", 1)
        return head, body

    async def main() -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
        egress = EgressProxy(policy, intercept_for=interceptor.intercept_for)
        proxy = await egress.serve_tcp()
        secret_origin = await asyncio.start_server(_origin, "127.0.0.1", 0, ssl=origin_ctx)
        other_origin = await asyncio.start_server(_origin, "127.0.0.1", 0, ssl=other_ctx)
        ports = [s.sockets[0].getsockname()[1] for s in (proxy, secret_origin, other_origin)]
        got = await ask(ports[0], "secret.test", ports[1], ours)
        # another allowed host: a tunnel the proxy cannot read (the client trusts its server)
        untouched = await ask(ports[0], "other.test", ports[2], test_ca)
        egress.abort_all()
        for server in (proxy, secret_origin, other_origin):
            server.close()
            await server.wait_closed()
        return got, untouched

    seen_auth.clear()
    got, untouched = on_proxy_loop(main())
    placeholder = f"Bearer {secret.placeholder}".encode()
    assert seen_auth == [b"Bearer s3cr3t-value", placeholder]  # the value reached its host only
    # its echo came back to the sandbox as the placeholder, in the head and in the body (read
    # from its chunks, and chunked on as it came)
    assert got[0] == (b"HTTP/1.1 200 OK\r\nX-Echo: " + placeholder +
                      b"\r\nTransfer-Encoding: chunked\r\nConnection: close")  # fmt: skip
    assert dechunk(got[1]) == (placeholder, True)
    assert untouched[1] == chunked(placeholder)  # the tunnel: as the origin sent it


def test_the_value_goes_into_credential_headers_only_and_comes_back_as_the_placeholder() -> None:
    s = parse_secret("TOKEN@api.example.com", ENV)
    p = s.placeholder
    head = (f"GET / HTTP/1.1\r\nHost: {p}\r\nOrigin: {p}\r\nAuthorization: Bearer {p}\r\n"
            f"X-Api-Key: {p}\r\n\r\n").encode()  # fmt: skip
    assert substitute(head, [s], "api.example.com") == (
        f"GET / HTTP/1.1\r\nHost: {p}\r\nOrigin: {p}\r\nAuthorization: Bearer s3cr3t-value\r\n"
        "X-Api-Key: s3cr3t-value\r\n\r\n").encode()  # fmt: skip
    # a server that echoes a header in its answer's head gets the placeholder back to the task
    assert scrub(b"HTTP/1.1 302 Found\r\nLocation: /?t=s3cr3t-value\r\n\r\n", [s]) == (
        f"HTTP/1.1 302 Found\r\nLocation: /?t={p}\r\n\r\n".encode())  # fmt: skip


@pytest.mark.parametrize(
    ("head", "answer"),
    [
        (b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: API.example.com:443\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n", 421),
        (b"GET https://other.example/ HTTP/1.1\r\nHost: api.example.com\r\n\r\n", 421),
        (b"GET / HTTP/1.1\r\nHost: api.example.com\r\nHost: other.example\r\n\r\n", 421),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"TRACE / HTTP/1.1\r\nHost: api.example.com\r\n\r\n", 405),
    ],
    ids=["host", "host-port-case", "other-host", "other-url", "two-hosts", "no-host", "trace"],
)  # fmt: skip
def test_a_request_in_a_tunnel_must_be_for_its_host(head: bytes, answer: int | None) -> None:
    refused = intercept.misdirected(head, "api.example.com", 443)
    assert (refused[0] if refused else None) == answer


def test_reserved_names_are_refused() -> None:
    for name in ("HTTPS_PROXY", "SSL_CERT_FILE", "AGENTBOX_X", "path"):
        with pytest.raises(UsageError, match="agentbox sets"):
            parse_secret(f"{name}@a.example", {name: "v"})


def test_a_secret_from_a_file_outside_the_workspace(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("file-value\n")
    s = read_secret_file(f"TOKEN@api.example.com={key}", workspace="/src/app")
    assert (s.name, s.hosts, s.value) == ("TOKEN", ("api.example.com",), "file-value")
    assert "file-value" not in repr(s)


def test_a_secret_file_in_the_workspace_or_empty_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("v")
    with pytest.raises(UsageError) as err:
        read_secret_file(f"TOKEN@a.example={key}", workspace=str(tmp_path))
    assert err.value.message == (f"--secret-file TOKEN: {key} is inside the workspace "
                                 f"{tmp_path}, where the sandbox reads it")  # fmt: skip
    key.write_text("\n")
    with pytest.raises(UsageError, match=f"^--secret-file TOKEN: {key} is empty$"):
        read_secret_file(f"TOKEN@a.example={key}", workspace="/src/app")
    key.write_text("two\nlines\n")
    with pytest.raises(UsageError, match="its value has a line break"):
        read_secret_file(f"TOKEN@a.example={key}", workspace="/src/app")


def test_flags_replace_the_configs_secret_of_the_same_name(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("from-file")
    env = {"TOKEN": "from-env", "OTHER": "o"}
    found = gather(configured=["TOKEN@a.example", "OTHER@b.example"],
                   flag_files=[f"TOKEN@c.example={key}"], environ=env,
                   workspace="/src/app")  # fmt: skip
    assert [(s.name, s.hosts, s.value) for s in found] == [
        ("TOKEN", ("c.example",), "from-file"), ("OTHER", ("b.example",), "o")]  # fmt: skip
    with pytest.raises(UsageError, match=r"^\[secrets\] env TOKEN is given twice$"):
        gather(configured=["TOKEN@a.example", "TOKEN@b.example"], environ=env, workspace="/s")
    with pytest.raises(UsageError, match=r"^--secret-file TOKEN is given twice$"):
        gather(
            flags=["TOKEN@a.example"],
            flag_files=[f"TOKEN@c.example={key}"],
            environ=env,
            workspace="/src/app",
        )
