"""The egress proxy of one task, served from a thread of the agentbox process for the task's
life: nothing more to start, and it cannot outlive the run that needs it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path
from types import TracebackType

from agentbox_cli.egress import SOCKET_NAME
from agentbox_cli.egress.policy import NetworkPolicy
from agentbox_cli.egress.proxy import EgressProxy
from agentbox_state.errors import AgentboxError

READY_SECONDS = 10.0


class ProxyThread:
    """``with ProxyThread(policy, socket_dir, log):`` serves ``socket_dir/proxy.sock``; the
    dir is made for it and removed after."""

    def __init__(self, policy: NetworkPolicy, socket_dir: Path, denial_log: Path) -> None:
        self.socket = socket_dir / SOCKET_NAME
        self._proxy = EgressProxy(policy, denial_log=denial_log)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="egress-proxy", daemon=True)

    def __enter__(self) -> ProxyThread:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        # the sandbox's root, an unmapped sub-uid under keep-id, reaches the socket through it
        self.socket.parent.chmod(0o755)
        self._thread.start()
        if not self._ready.wait(READY_SECONDS) or self._failed is not None:
            reason = self._failed or "it did not start in time"
            with contextlib.suppress(OSError):
                self.socket.parent.rmdir()
            raise AgentboxError(f"the egress proxy could not listen on {self.socket}: {reason}",
                                hint="check that the state dir is writable")  # fmt: skip
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        stop = self._stop
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(READY_SECONDS)
        self.socket.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.socket.parent.rmdir()

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
        async with server:
            await self._stop.wait()
        # connections still open when the task ended (their clients are gone with it, or a
        # tunnel's far end has not closed yet): dropped, and their handlers let finish
        self._proxy.abort_all()
        for _ in range(100):
            if not self._proxy.active:
                break
            await asyncio.sleep(0.01)


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
