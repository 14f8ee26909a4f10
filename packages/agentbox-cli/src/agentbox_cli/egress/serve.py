"""The egress proxy of one task, served from a thread of the agentbox process for the task's
life: nothing more to start, and it cannot outlive the run that needs it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from agentbox_cli.egress import BUNDLE_NAME, CA_NAME, SOCKET_NAME
from agentbox_cli.egress.policy import NetworkPolicy
from agentbox_cli.egress.proxy import CLOSE_SECONDS, EgressProxy
from agentbox_cli.egress.secrets import Secret
from agentbox_state.errors import AgentboxError
from agentbox_state.runner import Runner

READY_SECONDS = 10.0


def new_loop() -> asyncio.AbstractEventLoop:
    """The proxy's event loop: uvloop's (libuv, in C). A request through the proxy costs a
    handful of loop passes (accept, the head, the connect upstream, the answer); in C they
    take about half of what asyncio's own loop takes (bench/egress.py)."""
    import uvloop

    loop = uvloop.new_event_loop()
    loop.set_exception_handler(_unexpected_only)
    return loop


def _unexpected_only(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """The loop's report of an error nobody awaited, unless it is a connection's (reset,
    refused, timed out, no TLS): a peer that went away or spoke no TLS is the proxy's everyday
    (it answers its client itself), and asyncio's own loop does not log those either. uvloop
    reports one when a TLS connect is cancelled as its handshake fails (MagicStack/uvloop#437),
    which would land on the user's terminal."""
    import ssl

    if not isinstance(context.get("exception"), (ConnectionError, TimeoutError, ssl.SSLError)):
        loop.default_exception_handler(context)


class ProxyThread:
    """``with ProxyThread(policy, socket_dir, log):`` serves ``socket_dir/proxy.sock``; the
    dir is made for it and removed after."""

    def __init__(self, policy: NetworkPolicy, socket_dir: Path, denial_log: Path, *,
                 secrets: tuple[Secret, ...] = (), ca_dir: Path | None = None,
                 tls_dir: Path | None = None, runner: Runner | None = None) -> None:  # fmt: skip
        self.socket = socket_dir / SOCKET_NAME
        self._proxy = EgressProxy(policy, denial_log=denial_log, peer_allowed=own_uids())
        self._secrets, self._ca_dir, self._tls_dir, self._runner = (secrets, ca_dir, tls_dir,
                                                                    runner)  # fmt: skip
        self._loop = new_loop()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="egress-proxy", daemon=True)

    def __enter__(self) -> ProxyThread:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        # the sandbox's root, an unmapped sub-uid under keep-id, reaches the socket through it
        self.socket.parent.chmod(0o755)
        try:
            if self._secrets:
                self._intercept()
        except BaseException:
            self._remove()
            raise
        self._thread.start()
        if not self._ready.wait(READY_SECONDS) or self._failed is not None:
            reason = self._failed or "it did not start in time"
            self._remove()
            raise AgentboxError(f"the egress proxy could not listen on {self.socket}: {reason}",
                                hint="check that the state dir is writable")  # fmt: skip
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        stop = self._stop
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(READY_SECONDS)
        self._remove()

    def _remove(self) -> None:
        """What ``__enter__`` made: the socket dir and its files, the certificates' dir."""
        for name in (SOCKET_NAME, CA_NAME, BUNDLE_NAME):
            (self.socket.parent / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.socket.parent.rmdir()
        if self._tls_dir is not None:
            import shutil

            shutil.rmtree(self._tls_dir, ignore_errors=True)

    def _intercept(self) -> None:
        """The CA (made once), its certificate and the system's bundle with it where the
        sandbox sees them, a certificate per secret host, and the proxy's interceptor."""
        from agentbox_cli.egress import intercept, tls

        assert self._ca_dir is not None
        assert self._tls_dir is not None
        assert self._runner is not None
        ca = tls.ensure_ca(self._ca_dir, self._runner)
        there = self.socket.parent
        (there / CA_NAME).write_bytes(ca.read_bytes())
        system = tls.system_bundle()
        base = system.read_bytes() if system is not None else b""
        (there / BUNDLE_NAME).write_bytes(base.rstrip(b"\n") + b"\n" + ca.read_bytes())
        for name in (CA_NAME, BUNDLE_NAME):
            (there / name).chmod(0o644)
        servers = {}
        for host in dict.fromkeys(h for s in self._secrets for h in s.hosts):
            cert, key = tls.make_leaf(self._ca_dir, self._tls_dir, host, self._runner)
            servers[host] = intercept.server_context(os.fspath(cert), os.fspath(key))
        interceptor = intercept.SecretInterceptor(self._secrets, servers,
                                                  intercept.upstream_context())  # fmt: skip
        self._proxy.intercept_for = interceptor.intercept_for

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            # a Unix socket's path is limited to 107 bytes; the state dir's can be longer, so
            # the socket is bound through the descriptor of its directory
            fd = os.open(self.socket.parent, os.O_PATH | os.O_DIRECTORY)
            try:
                server = await self._proxy.serve_unix(Path(f"/proc/self/fd/{fd}/{SOCKET_NAME}"))
            finally:
                os.close(fd)
        except OSError as err:
            self._failed = err
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        server.close()  # no new clients (not `async with`: from 3.12 it waits for every one)
        # connections still open when the task ended (their clients are gone with it, or a
        # tunnel's far end has not closed yet): dropped, and their handlers let finish
        self._proxy.abort_all()
        handlers = asyncio.all_tasks() - {asyncio.current_task()}
        if handlers:
            _, late = await asyncio.wait(handlers, timeout=2 * CLOSE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


def own_uids() -> Callable[[int], bool]:
    """Who may use the proxy's socket: this user, and the sub-uids its rootless containers'
    users map to (the relay runs as the sandbox's root, a sub-uid under keep-id)."""
    import pwd

    from agentbox_state.subids import parse_sub_ids

    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
        with open("/etc/subuid", encoding="utf-8") as f:
            ranges = [range(first, first + count)
                      for first, count in parse_sub_ids(f.read(), name, uid)]  # fmt: skip
    except (KeyError, OSError):
        ranges = []
    return lambda peer: peer == uid or any(peer in r for r in ranges)


def denials(log: Path) -> str | None:
    """What to tell the user after a task whose requests the policy denied (None: none were)."""
    import json

    try:
        lines = log.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    hosts = dict.fromkeys(json.loads(line)["host"] for line in lines if line.strip())
    if not hosts:
        return None
    names = ", ".join(hosts)
    return (f"the network policy denied {len(lines)} request(s) of this task, to {names}; "
            f"each is in {log}\nhint: if the task needs them, add them to [network] allow in "
            f"agentbox.toml, or pass --allow {next(iter(hosts))}")  # fmt: skip
