"""Running the fleet server: TLS context, listening sockets, connection limits, workers.

- TLS 1.3 only (``minimum_version = TLSv1_3``); the server's key is the fleet's encrypted
  PKCS#8 key, opened with the fleet passphrase. Client certificates are *optional* at the
  TLS layer (``CERT_OPTIONAL``) so that ``/v1/health`` and the admin endpoints work
  without one, but a certificate that is presented must chain to the fleet's device CA,
  or the handshake fails. Device endpoints refuse a request without one
  (:mod:`tinyward.fleet.server`).
- Slow clients: the TLS handshake has ``handshake_timeout``; a connection must deliver a
  complete request head within ``idle_timeout`` (aiohttp's keep-alive timer runs from the
  moment the connection is made and from each answer); a body must arrive within
  ``body_timeout``. Connections are capped per worker and per client IP address, so a
  slowloris from one address cannot take the slots others need.
- Workers: ``workers > 1`` forks processes that each listen on the same port with
  ``SO_REUSEPORT``; the kernel spreads connections over them, and SQLite's locking
  serialises their commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import signal
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.errors import WrongPassphrase
from tinyward.fleet.pki import Fleet
from tinyward.fleet.server import FleetServer, ServerConfig
from tinyward.fleet.store import open_store


def server_ssl_context(fleet: Fleet, passphrase: bytes) -> ssl.SSLContext:
    """The fleet server's TLS 1.3 context (client certificates from the device CA, optional).

    Raises:
        WrongPassphrase: the passphrase does not open the server key.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(fleet.server_certificate_path, fleet.server_key_path,
                                password=passphrase)
    except ssl.SSLError:
        raise WrongPassphrase("the fleet passphrase does not open the server key "
                              "(TINYWARD_FLEET_PASSPHRASE)") from None
    # Trust only the device CA: a certificate issued by the root for anything else (the
    # server's own, say) must not pass as a device. PARTIAL_CHAIN lets the intermediate
    # device CA be the trust anchor.
    context.load_verify_locations(cafile=str(fleet.device_ca_path))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.verify_mode = ssl.CERT_OPTIONAL
    context.options |= ssl.OP_NO_TICKET  # no resumption: every connection shows its cert
    return context


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket (IPv4 or IPv6 by ``host``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _guard_connections(server: web.Server, config: ServerConfig) -> None:
    """Cap concurrent connections per worker and per client address (after the handshake)."""
    per_ip: Counter[str] = Counter()
    peers: dict[Any, str] = {}
    made, lost = server.connection_made, server.connection_lost

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        made(handler, transport)
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        peers[handler] = ip
        per_ip[ip] += 1
        if len(server.connections) > config.max_connections or \
                per_ip[ip] > config.max_connections_per_ip:
            transport.abort()

    def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
        ip = peers.pop(handler, None)
        if ip is not None:
            per_ip[ip] -= 1
            if per_ip[ip] <= 0:
                del per_ip[ip]
        lost(handler, exc)

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]


@dataclass
class RunningServer:
    """A server started by :func:`start` on the running loop."""

    runner: web.AppRunner
    server: asyncio.Server
    port: int

    async def stop(self) -> None:
        self.server.close()
        await self.runner.cleanup()


async def start(fleet_server: FleetServer, sock: socket.socket,
                ssl_context: ssl.SSLContext) -> RunningServer:
    """Serve ``fleet_server`` on a listening socket with TLS, on the running loop."""
    config = fleet_server.config
    runner = web.AppRunner(fleet_server.make_app(), access_log=None,
                           keepalive_timeout=config.idle_timeout, handle_signals=False)
    await runner.setup()
    if runner.server is None:  # set by setup(); None here would be an aiohttp bug
        raise RuntimeError("aiohttp runner has no server after setup()")
    _guard_connections(runner.server, config)
    server = await asyncio.get_running_loop().create_server(
        runner.server, sock=sock, ssl=ssl_context,
        ssl_handshake_timeout=config.handshake_timeout)
    return RunningServer(runner, server, sock.getsockname()[1])


class ServerThread:
    """The fleet server on its own event loop in a thread (tests, demo, benchmarks)."""

    def __init__(self, fleet_server: FleetServer, ssl_context: ssl.SSLContext,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        self.host = host
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._running: RunningServer | None = None
        self._error: BaseException | None = None

        async def main() -> None:
            try:
                self._running = await start(fleet_server, self._sock, ssl_context)
            except BaseException as error:
                self._error = error
                raise
            finally:
                self._ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            with contextlib.suppress(BaseException):
                self._loop.run_until_complete(main())
            if self._error is None:
                self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fleet-server", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._running is not None:
                await self._running.stop()
            current = asyncio.current_task()
            leftovers = [t for t in asyncio.all_tasks() if t is not current]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


def _worker(fleet_dir: Path, passphrase: bytes, db_url: str, config: ServerConfig,
            sock: socket.socket, announce: Callable[[int], None] | None,
            inherited: socket.socket | None = None) -> None:
    if inherited is not None:  # a forked worker must not hold the parent's listening socket
        inherited.close()

    async def main() -> None:
        fleet = Fleet.open(fleet_dir)
        context = server_ssl_context(fleet, passphrase)
        store = open_store(db_url)
        running = await start(FleetServer(FleetDirectory(fleet), store, config), sock, context)
        # Everything alive now (modules, the app, the fleet) lives as long as the process:
        # keep it out of the cyclic GC, whose full passes otherwise walk it again and again
        # while connections come and go (≈ 80 % of the CPU during a burst of handshakes
        # before this, measured with py-spy --native).
        gc.freeze()
        if announce is not None:
            announce(running.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await running.stop()
        store.close()

    asyncio.run(main())


def serve_forever(fleet_dir: Path, passphrase: bytes, db_url: str, host: str, port: int,
                  config: ServerConfig | None = None, workers: int = 1,
                  announce: Callable[[int], None] | None = None) -> None:
    """Run the server until SIGTERM/SIGINT, with ``workers`` processes on one port.

    Checks the fleet, passphrase and database first, so a mistake is reported before any
    process is forked. Raises what :meth:`Fleet.open`, :func:`server_ssl_context` and
    :func:`open_store` raise.
    """
    config = config or ServerConfig()
    fleet = Fleet.open(fleet_dir)
    server_ssl_context(fleet, passphrase)
    open_store(db_url).close()
    reuse = workers > 1
    sock = bind(host, port, reuse_port=reuse)
    port = sock.getsockname()[1]
    children = []
    if reuse:
        context = multiprocessing.get_context("fork")
        for _ in range(workers - 1):
            child_sock = bind(host, port, reuse_port=True)
            child = context.Process(target=_worker, daemon=True,
                                    args=(fleet_dir, passphrase, db_url, config, child_sock, None,
                                          sock))
            child.start()
            child_sock.close()
            children.append(child)
    try:
        _worker(fleet_dir, passphrase, db_url, config, sock, announce)
    finally:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)
        for child in children:
            child.join(10)
