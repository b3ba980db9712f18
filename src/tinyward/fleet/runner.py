"""Running the fleet server: TLS context, listening sockets, connection limits, workers.

- Two listeners. The **device** listener requires a client certificate from the fleet's
  device CA in the TLS handshake (``CERT_REQUIRED``): a client without one never reaches
  HTTP. The **admin** listener (loopback by default, its own port) takes no client
  certificate; its endpoints need the admin bearer token. Both are TLS 1.3 only
  (``minimum_version = TLSv1_3``) with the fleet's server certificate; the server's key is
  the fleet's sealed server key, opened with the server passphrase (never a CA or update
  key).
- Before the handshake nobody is authenticated: those connections have their own caps,
  per address and in all (:class:`~tinyward.fleet.guards.HandshakeGate`), and a short
  ``handshake_timeout``; over the per-address cap a new connection is closed at once,
  and when the total is reached the oldest handshake makes room. They never count
  against ``max_connections``, which only connections that finished the handshake (on the
  device listener: devices) use. 1,100 certificate-less connections held every slot
  before.
- Slow clients: a connection must deliver a complete request head within
  ``idle_timeout`` (aiohttp's keep-alive timer runs from the moment the connection is
  made and from each answer); a body must arrive within ``body_timeout``. Connections are
  capped per worker and per client IP address, so a slowloris from one address cannot
  take the slots others need.
- Workers: ``workers > 1`` forks processes; the first one accepts every connection and
  deals them round-robin (:class:`ConnectionDealer`), handing each socket to a worker
  over a Unix socket before the TLS handshake. Devices hold long connections and send
  at a constant rate, so equal connection counts mean equal work; the kernel's
  ``SO_REUSEPORT`` hash, used before, split 200 connections up to 17 % unevenly and left
  a core idle. SQLite's locking serialises the workers' commits.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import errno
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding

from tinyward.errors import BadInput, Misuse
from tinyward.fleet.alerts import AlertSender, parse_sink
from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.errors import CannotListen
from tinyward.fleet.guards import HandshakeGate
from tinyward.fleet.incidents import QUIET_TICK
from tinyward.fleet.metrics import enable_multiprocess
from tinyward.fleet.pki import Fleet
from tinyward.fleet.server import FleetServer, ServerConfig
from tinyward.fleet.store import open_store

_log = logging.getLogger("tinyward.fleet.runner")


def server_ssl_context(fleet: Fleet, passphrase: bytes | None = None, *,
                       unsafe_client_cert_optional: bool = False) -> ssl.SSLContext:
    """The device listener's TLS 1.3 context: a client certificate from the device CA is
    required in the handshake.

    ``passphrase`` is the *server* passphrase (None for a server key kept in clear, 0600):
    the server never holds a CA or update key, nor their passphrases.

    ``unsafe_client_cert_optional`` (the assessment lab's control only, ``fleet serve
    --unsafe-client-cert-optional``, hidden): ``CERT_OPTIONAL``, so a client without a
    certificate finishes the handshake and reaches HTTP (where device endpoints answer
    401); a certificate it does send is still verified.

    Raises:
        WrongPassphrase: the passphrase does not open the server key.
    """
    context = _tls13_server_context(fleet, passphrase)
    # Trust only the device CAs (current and retiring): a certificate issued by the root
    # for anything else (the server's own, say) must not pass as a device. PARTIAL_CHAIN
    # lets the intermediate device CA be the trust anchor.
    for device_ca in fleet.device_cas:
        context.load_verify_locations(cadata=device_ca.public_bytes(Encoding.PEM).decode())
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.verify_mode = ssl.CERT_OPTIONAL if unsafe_client_cert_optional else \
        ssl.CERT_REQUIRED
    return context


def admin_ssl_context(fleet: Fleet, passphrase: bytes | None = None) -> ssl.SSLContext:
    """The admin listener's TLS 1.3 context (no client certificates: a bearer token).

    Raises:
        WrongPassphrase: the passphrase does not open the server key.
    """
    context = _tls13_server_context(fleet, passphrase)
    context.verify_mode = ssl.CERT_NONE
    return context


def _tls13_server_context(fleet: Fleet, passphrase: bytes | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    fleet.load_server_chain(context, passphrase)
    context.options |= ssl.OP_NO_TICKET  # no resumption: every connection shows its cert
    return context


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPv4 or IPv6 by ``host``).

    Raises:
        CannotListen: the port is in use, the address is not this machine's, or the name
            does not resolve.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as error:
        sock.close()
        raise CannotListen(f"cannot listen on {host}:{port}: {_why_not(error)}") from None
    sock.setblocking(False)
    return sock


def _why_not(error: OSError) -> str:
    if isinstance(error, socket.gaierror):
        return f"the name does not resolve ({error.strerror})"
    if error.errno == errno.EADDRINUSE:
        return "the port is in use (another server?); choose another with --port or --admin-port"
    if error.errno == errno.EADDRNOTAVAIL:
        return "this machine has no such address; choose one of its own with --host"
    if error.errno == errno.EACCES:
        return "permission denied (ports below 1024 need root)"
    return error.strerror or str(error)


def _guard_connections(server: web.Server, max_connections: int, max_per_ip: int,
                       meet: Callable[[asyncio.Transport], str | None] | None = None,
                       max_per_device: int = 0, *,
                       fleet_server: FleetServer | None = None,
                       listener: str = "device") -> None:
    """Cap concurrent connections per worker, per client address and per device (after the
    handshake), and let the fleet server meet each connection it keeps
    (:meth:`FleetServer.meet_connection`, which names the device). With ``fleet_server``,
    each connection is one operator log line and each cap's refusal is counted."""

    def note(ip: str, outcome: str, device_id: str | None = None) -> None:
        if fleet_server is None:
            return
        if outcome == "accepted":
            fleet_server.oplog.connection(listener, ip, outcome, device_id)
        else:
            fleet_server.metrics.refused(outcome)
            fleet_server.oplog.refusal(listener, ip, outcome, device=device_id)

    per_ip: Counter[str] = Counter()
    peers: dict[Any, str] = {}
    per_device: Counter[str] = Counter()
    devices: dict[Any, str] = {}
    made, lost = server.connection_made, server.connection_lost

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        made(handler, transport)
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        peers[handler] = ip
        per_ip[ip] += 1
        if len(server.connections) > max_connections or per_ip[ip] > max_per_ip:
            note(ip, "connection_cap")
            transport.abort()
            return
        device_id = meet(transport) if meet is not None else None
        if device_id is not None:
            devices[handler] = device_id
            per_device[device_id] += 1
            if max_per_device and per_device[device_id] > max_per_device:
                note(ip, "device_connection_cap", device_id)
                transport.abort()
                return
        note(ip, "accepted", device_id)

    def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
        ip = peers.pop(handler, None)
        if ip is not None:
            per_ip[ip] -= 1
            if per_ip[ip] <= 0:
                del per_ip[ip]
        device_id = devices.pop(handler, None)
        if device_id is not None:
            per_device[device_id] -= 1
            if per_device[device_id] <= 0:
                del per_device[device_id]
        lost(handler, exc)

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]


@dataclass
class RunningServer:
    """A server started by :func:`start`, :func:`start_dealt` or :func:`start_admin`."""

    runner: web.AppRunner
    server: asyncio.Server | None
    port: int
    dealer: ConnectionDealer | None = None

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.dealer is not None:
            await self.dealer.close()
        await self.runner.cleanup()


async def _app_runner(fleet_server: FleetServer) -> tuple[web.AppRunner, web.Server]:
    config = fleet_server.config
    runner = web.AppRunner(fleet_server.make_device_app(), access_log=None,
                           keepalive_timeout=config.idle_timeout, handle_signals=False)
    await runner.setup()
    if runner.server is None:  # set by setup(); None here would be an aiohttp bug
        raise RuntimeError("aiohttp runner has no server after setup()")
    _guard_connections(runner.server, config.max_connections, config.max_connections_per_ip,
                       fleet_server.meet_connection, config.max_connections_per_device,
                       fleet_server=fleet_server)
    return runner, runner.server


async def start(fleet_server: FleetServer, sock: socket.socket,
                ssl_context: ssl.SSLContext) -> RunningServer:
    """Serve the device endpoints on a listening socket with TLS, on the running loop
    (one worker: a :class:`ConnectionDealer` that deals to nobody else, for its caps)."""
    return await start_dealt(fleet_server, ssl_context, listening=sock)


async def start_admin(fleet_server: FleetServer, sock: socket.socket,
                      ssl_context: ssl.SSLContext) -> RunningServer:
    """Serve the admin endpoints on their own listening socket (one worker only)."""
    config = fleet_server.config
    runner = web.AppRunner(fleet_server.make_admin_app(), access_log=None,
                           keepalive_timeout=config.idle_timeout, handle_signals=False)
    await runner.setup()
    if runner.server is None:
        raise RuntimeError("aiohttp runner has no server after setup()")
    _guard_connections(runner.server, config.admin_max_connections,
                       config.admin_max_connections, fleet_server=fleet_server,
                       listener="admin")
    dealer = ConnectionDealer(runner.server, ssl_context, config.handshake_timeout,
                              listening=sock,
                              gate=HandshakeGate(config.admin_max_connections,
                                                 config.admin_max_connections),
                              on_refused=_refusal_noter(fleet_server, "admin"))
    dealer.start()
    return RunningServer(runner, None, sock.getsockname()[1], dealer)


async def start_dealt(fleet_server: FleetServer, ssl_context: ssl.SSLContext, *,
                      listening: socket.socket | None = None,
                      workers: Sequence[socket.socket] = (),
                      dealt_from: socket.socket | None = None,
                      on_dealer_gone: Callable[[], None] | None = None) -> RunningServer:
    """Serve ``fleet_server`` on connections dealt by a :class:`ConnectionDealer`.

    The accepting worker passes ``listening`` (and the channels to the other ``workers``);
    every other worker passes ``dealt_from``, its end of the channel, and may pass
    ``on_dealer_gone``, called when the accepting worker has gone (even by SIGKILL).
    """
    runner, protocol_factory = await _app_runner(fleet_server)
    config = fleet_server.config
    dealer = ConnectionDealer(protocol_factory, ssl_context, config.handshake_timeout,
                              listening=listening, workers=workers, dealt_from=dealt_from,
                              on_dealer_gone=on_dealer_gone,
                              gate=HandshakeGate(config.max_handshakes_per_ip,
                                                 config.max_handshakes),
                              on_refused=_refusal_noter(fleet_server, "device"))
    dealer.start()
    port = listening.getsockname()[1] if listening is not None else 0
    return RunningServer(runner, None, port, dealer)


def _refusal_noter(fleet_server: FleetServer, listener: str) -> Callable[[str, str], None]:
    """(peer address, reason) -> a counted refusal and an operator log line."""
    def note(peer: str, reason: str) -> None:
        fleet_server.metrics.refused(reason)
        fleet_server.oplog.refusal(listener, peer, reason)
    return note


class ConnectionDealer:
    """Accepts connections in one worker and deals them round-robin to all workers.

    Sockets travel to the other workers as file descriptors over ``AF_UNIX``
    ``SOCK_SEQPACKET`` channels (one descriptor per message, so none can be cut off),
    *before* the TLS handshake: each worker does its own handshakes. A worker whose
    channel is full or gone gets no connection; this one serves it instead, so a dead
    worker costs capacity, not connections. Every wake-up accepts at most
    ``MAX_ACCEPT_PER_WAKEUP`` connections, so a flood cannot starve the requests already
    being served on the same loop. Each worker admits handshakes through its own
    :class:`~tinyward.fleet.guards.HandshakeGate` (caps on connections not yet
    authenticated): over the per-address cap it is closed before any TLS work; when the
    total is reached, the oldest handshake in progress is cancelled to make room.
    """

    MAX_ACCEPT_PER_WAKEUP = 64

    def __init__(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                 ssl_context: ssl.SSLContext, handshake_timeout: float, *,
                 listening: socket.socket | None = None,
                 workers: Sequence[socket.socket] = (),
                 dealt_from: socket.socket | None = None,
                 on_dealer_gone: Callable[[], None] | None = None,
                 gate: HandshakeGate[socket.socket] | None = None,
                 on_refused: Callable[[str, str], None] | None = None) -> None:
        if (listening is None) == (dealt_from is None):
            raise ValueError("a dealer either accepts (listening) or is dealt to (dealt_from)")
        self._factory = protocol_factory
        self._ssl = ssl_context
        self._handshake_timeout = handshake_timeout
        self._listening = listening
        self._workers = list(workers)
        self._dealt_from = dealt_from
        self._on_dealer_gone = on_dealer_gone
        #: (peer address, reason) of each connection refused before HTTP (log, metrics).
        self._on_refused = on_refused or (lambda _peer, _reason: None)
        self.gate: HandshakeGate[socket.socket] = gate or HandshakeGate(16, 256)
        self._turn = 0  # 0: this worker; i: self._workers[i - 1]
        self._handshakes: set[asyncio.Task[None]] = set()
        self._pending: dict[socket.socket, asyncio.Task[None]] = {}  # handshakes, by socket
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Connections served here and passed on, by worker (0 is this one).
        self.dealt = [0] * (len(self._workers) + 1)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for channel in self._workers:
            channel.setblocking(False)
        if self._listening is not None:
            self._listening.setblocking(False)
            self._loop.add_reader(self._listening.fileno(), self._accept)
        if self._dealt_from is not None:
            self._dealt_from.setblocking(False)
            self._loop.add_reader(self._dealt_from.fileno(), self._receive)

    async def close(self) -> None:
        if self._loop is not None:
            for sock in (self._listening, self._dealt_from):
                if sock is not None and sock.fileno() >= 0:
                    self._loop.remove_reader(sock.fileno())
                    sock.close()
        for task in list(self._handshakes):
            task.cancel()
        await asyncio.gather(*self._handshakes, return_exceptions=True)

    def _accept(self) -> None:
        if self._listening is None:  # set by start(); a caller bug otherwise
            raise Misuse("listening used before the server started")
        for _ in range(self.MAX_ACCEPT_PER_WAKEUP):
            try:
                connection, _ = self._listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # EMFILE, ENOBUFS …: keep serving, try again later
                _log.warning("accepting a connection failed: %s", error)
                return
            self._deal(connection)

    def _deal(self, connection: socket.socket) -> None:
        turn, self._turn = self._turn, (self._turn + 1) % (len(self._workers) + 1)
        if turn:
            try:
                socket.send_fds(self._workers[turn - 1], [b"c"], [connection.fileno()])
            except OSError:  # full or gone: serve it here rather than drop it
                pass
            else:
                self.dealt[turn] += 1
                connection.close()  # the worker holds its own copy of the descriptor
                return
        self.dealt[0] += 1
        self._serve(connection)

    def _receive(self) -> None:
        if self._dealt_from is None:  # set by start(); a caller bug otherwise
            raise Misuse("dealt_from used before the server started")
        for _ in range(self.MAX_ACCEPT_PER_WAKEUP):
            try:
                message, fds, _, _ = socket.recv_fds(self._dealt_from, 16, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                _log.warning("receiving a dealt connection failed: %s", error)
                return
            if not message and not fds:  # the dealer is gone: nothing more will come
                if self._loop is None:  # set by start(); a caller bug otherwise
                    raise Misuse("loop used before the server started")
                self._loop.remove_reader(self._dealt_from.fileno())
                if self._on_dealer_gone is not None:
                    self._on_dealer_gone()
                return
            for fd in fds:
                self.dealt[0] += 1
                self._serve(socket.socket(fileno=fd))

    def _serve(self, connection: socket.socket) -> None:
        if self._loop is None:  # set by start(); a caller bug otherwise
            raise Misuse("loop used before the server started")
        try:
            address = str(connection.getpeername()[0])
        except OSError:  # already gone
            connection.close()
            return
        admitted, evicted = self.gate.admit(address, connection)
        if not admitted:
            connection.close()  # over the per-address cap: no TLS work at all
            self._on_refused(address, "handshake_cap")
            return
        if evicted is not None:  # the oldest handshake in progress makes room
            self._pending.pop(evicted).cancel()
        connection.setblocking(False)
        task = self._loop.create_task(self._handshake(connection, address))
        self._pending[connection] = task
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, connection: socket.socket, address: str = "?") -> None:
        if self._loop is None:  # set by start(); a caller bug otherwise
            raise Misuse("loop used before the server started")
        try:
            await self._loop.connect_accepted_socket(
                self._factory, connection, ssl=self._ssl,
                ssl_handshake_timeout=self._handshake_timeout)
        except (OSError, TimeoutError, EOFError) as error:  # ssl.SSLError is an OSError
            # A client that fails TLS (wrong CA, no TLS, too slow) is the client's problem:
            # note it quietly, as asyncio's own server does.
            _log.debug("TLS handshake with a client failed: %s", error)
            connection.close()
            self._on_refused(address, "tls_handshake_failed")
        except Exception:  # noqa: BLE001 - a bug, not a client: log it, keep serving
            _log.exception("serving a dealt connection failed")
            connection.close()
        except asyncio.CancelledError:  # evicted by a newer handshake, or shutting down
            connection.close()
            raise
        finally:
            self.gate.release(connection)
            self._pending.pop(connection, None)


class ServerThread:
    """The fleet server on its own event loop in a thread (tests, demo, benchmarks)."""

    def __init__(self, fleet_server: FleetServer, ssl_context: ssl.SSLContext,
                 host: str = "127.0.0.1", port: int = 0, *,
                 admin_context: ssl.SSLContext | None = None,
                 admin_host: str = "127.0.0.1", admin_port: int = 0) -> None:
        self._sock = bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        self.host = host
        # The admin listener, if an admin context is given (its own port, loopback).
        self._admin_sock = bind(admin_host, admin_port) if admin_context is not None else None
        self.admin_port: int | None = (self._admin_sock.getsockname()[1]
                                       if self._admin_sock is not None else None)
        self._admin: RunningServer | None = None
        self._loop = event_loop_factory()()
        self._ready = threading.Event()
        self._running: RunningServer | None = None
        self._error: BaseException | None = None

        async def main() -> None:
            try:
                self._running = await start(fleet_server, self._sock, ssl_context)
                if self._admin_sock is not None:
                    if admin_context is None:  # set by start(); a caller bug otherwise
                        raise Misuse("admin_context used before the server started")
                    self._admin = await start_admin(fleet_server, self._admin_sock,
                                                    admin_context)
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
            if self._admin is not None:
                await self._admin.stop()
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


#: Allocations between the cyclic GC's young-generation passes in a server worker.
WORKER_GC_THRESHOLD = 20_000

#: Seconds between two re-signings of the update repository's online roles (snapshot and
#: timestamp) by the running server: far inside the timestamp's day, so a running server's
#: repository never expires (docs/updates.md).
UPDATE_REFRESH_SECONDS = 600.0


def refresh_updates_once(fleet_dir: Path, passphrase: bytes | None) -> tuple[str, ...]:
    """Re-sign the fleet's update repository's snapshot and timestamp when they need it
    (``UpdateRepository.refresh_online``); nothing when the fleet has no repository.
    Returns the roles re-signed. Raises what ``refresh_online`` raises."""
    from tinyward.fleet.update_repo import UpdateRepository

    repo = UpdateRepository(fleet_dir)
    if not repo.exists:
        return ()
    return repo.refresh_online(None, passphrase)


async def refresh_updates(fleet_dir: Path, passphrase: bytes | None, every: float,
                          stop: asyncio.Event) -> None:
    """At start and every ``every`` seconds until ``stop``: :func:`refresh_updates_once`
    in a thread (opening a sealed online key costs a scrypt), one at a time. A failure is
    logged as one line and tried again at the next tick; it never stops the server."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        try:
            roles = await loop.run_in_executor(None, refresh_updates_once, fleet_dir,
                                               passphrase)
        except Exception as error:  # noqa: BLE001 - logged; the server must keep serving
            _log.warning("update repository refresh failed: %s: %s", type(error).__name__,
                         str(error).splitlines()[0] if str(error) else "")
        else:
            if roles:
                _log.warning("update repository: re-signed %s", ", ".join(roles))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


#: The read buffer of every TLS connection in a server process. asyncio's default
#: (``SSLProtocol.max_size``) is 256 KiB, allocated and zeroed per connection, so resident:
#: it was ≈ 260 of the ≈ 290 KB a connected idle device cost a node (bench fleetload,
#: docs/scaling.md). A read returns at most this much and is called again for the rest;
#: a TLS record holds at most 16 KiB of plaintext. (uvloop, the default loop, has its own
#: TLS buffer, not zeroed: 51 KB per device measured with it after the merge.)
TLS_READ_BUFFER = 16 * 1024


def shrink_tls_read_buffer(size: int = TLS_READ_BUFFER) -> None:
    """Give this process's TLS connections a ``size``-byte read buffer (a server process:
    the setting is asyncio's, process-wide)."""
    asyncio.sslproto.SSLProtocol.max_size = size


async def watch_quiet(fleet_server: FleetServer, every: float, stop: asyncio.Event) -> None:
    """Every ``every`` seconds until ``stop``: one tick of the quiet-device detector
    (:meth:`FleetServer.check_quiet`, a bounded slice of the fleet). A failure is one log
    line; the next tick tries again."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return
        try:
            await fleet_server.check_quiet()
        except Exception as error:  # noqa: BLE001 - logged; the server must keep serving
            _log.warning("quiet-device check failed: %s: %s", type(error).__name__,
                         str(error).splitlines()[0] if str(error) else "")


def _worker(fleet_dir: Path, passphrase: bytes | None, db_url: str, config: ServerConfig,
            announce: Callable[[int, int | None], None] | None, *,
            sock: socket.socket | None = None, channels: Sequence[socket.socket] = (),
            dealt_from: socket.socket | None = None, admin_sock: socket.socket | None = None,
            close_first: Sequence[socket.socket] = (),
            update_refresh: float | None = None, alerts: Sequence[str] = (),
            quiet_tick: float | None = None) -> None:
    for inherited in close_first:  # a forked worker must not hold the parent's sockets
        inherited.close()

    async def main() -> None:
        shrink_tls_read_buffer()
        fleet = Fleet.open(fleet_dir)
        context = server_ssl_context(
            fleet, passphrase, unsafe_client_cert_optional=config.unsafe_client_cert_optional)
        store = open_store(db_url, max_incident_kinds=config.max_incident_kinds_per_device)
        # Sinks are made here, after the fork: each worker has its own sender threads.
        sender = AlertSender([parse_sink(spec) for spec in alerts]) if alerts else None
        fleet_server = FleetServer(FleetDirectory(fleet), store, config, alerts=sender)
        stop = asyncio.Event()
        # A worker whose dealer has died (SIGKILL included) stops too, rather than live
        # on as an orphan holding the database and its devices' connections.
        running = await start_dealt(fleet_server, context, listening=sock,
                                    workers=channels, dealt_from=dealt_from,
                                    on_dealer_gone=stop.set)
        admin = (await start_admin(fleet_server, admin_sock, admin_ssl_context(fleet, passphrase))
                 if admin_sock is not None else None)
        # Everything alive now (modules, the app, the fleet) lives as long as the process:
        # keep it out of the cyclic GC, whose full passes otherwise walk it again and again
        # while connections come and go (≈ 80 % of the CPU during a burst of handshakes
        # before this, measured with py-spy --native).
        gc.freeze()
        # Almost everything a request allocates is freed by reference counting; the cyclic
        # GC's young-generation passes (every 700 allocations by default, i.e. every few
        # reports) found little and cost ≈ 2 µs per report (4 of 4 paired bench runs).
        gc.set_threshold(WORKER_GC_THRESHOLD, *gc.get_threshold()[1:])
        if announce is not None:
            announce(running.port, admin.port if admin is not None else None)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        refresher = (asyncio.create_task(refresh_updates(fleet_dir, passphrase,
                                                         update_refresh, stop))
                     if update_refresh is not None else None)
        # The first worker (the one with the admin listener) watches for quiet devices.
        quiet = (asyncio.create_task(watch_quiet(fleet_server, quiet_tick, stop))
                 if quiet_tick is not None and sock is not None else None)
        await stop.wait()
        if quiet is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(quiet, 30)
        if refresher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(refresher, 30)
        if admin is not None:
            await admin.stop()
        await running.stop()
        if sender is not None:
            sender.close()
        store.close()

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(main())


#: Environment variable naming the server's event loop: ``uvloop`` (the default when it is
#: installed) or ``asyncio`` (the standard library's).
EVENT_LOOP_ENV = "TINYWARD_EVENT_LOOP"


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The server's event loop: uvloop when it is installed (libuv, and TLS in Cython: a
    device's connection cost about a third less server CPU, ``tinyward bench
    handshake``), else asyncio's; ``TINYWARD_EVENT_LOOP=asyncio`` chooses asyncio's.

    Raises:
        BadInput: ``TINYWARD_EVENT_LOOP`` names another loop, or uvloop while it is missing.
    """
    chosen = os.environ.get(EVENT_LOOP_ENV, "")
    if chosen not in ("", "uvloop", "asyncio"):
        raise BadInput(f"{EVENT_LOOP_ENV} must be uvloop or asyncio, not {chosen!r}")
    if chosen != "asyncio":
        try:
            import uvloop
        except ImportError:
            if chosen == "uvloop":
                raise BadInput(f"{EVENT_LOOP_ENV}=uvloop but uvloop is not installed") from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def serve_forever(fleet_dir: Path, passphrase: bytes | None, db_url: str, host: str, port: int,
                  config: ServerConfig | None = None, workers: int = 1,
                  announce: Callable[[int, int | None], None] | None = None, *,
                  admin_host: str = "127.0.0.1", admin_port: int | None = None,
                  update_refresh: float | None = UPDATE_REFRESH_SECONDS,
                  alerts: Sequence[str] = (), quiet_tick: float | None = QUIET_TICK) -> None:
    """Run the server until SIGTERM/SIGINT, with ``workers`` processes on one port.

    The first worker re-signs the update repository's online roles at start and every
    ``update_refresh`` seconds (None: never), see :func:`refresh_updates`.

    The admin listener (``admin_port``; None: none) is served by the first worker only;
    ``announce(device_port, admin_port)`` is called once both listen.

    ``alerts``: ``--alert`` specifications (fleet/alerts.py), a sender per worker. The first
    worker runs the quiet-device detector every ``quiet_tick`` seconds (None: never).
    With several workers, metrics are counted in prometheus_client's multiprocess mode in
    a private folder made here and removed at the end (fleet/metrics.py).

    Checks the fleet, passphrase and database first, so a mistake is reported before any
    process is forked. Raises what :meth:`Fleet.open`, :func:`server_ssl_context` and
    :func:`open_store` raise.
    """
    config = config or ServerConfig()
    event_loop_factory()  # a wrong TINYWARD_EVENT_LOOP is refused before anything starts
    fleet = Fleet.open(fleet_dir)
    server_ssl_context(fleet, passphrase)
    open_store(db_url).close()
    for spec in alerts:  # a bad --alert is one error line before anything starts
        closer = getattr(parse_sink(spec), "close", None)
        if callable(closer):
            closer()
    metrics_dir = None
    if workers > 1:
        metrics_dir = Path(tempfile.mkdtemp(prefix="tinyward-metrics-"))  # 0700
        enable_multiprocess(metrics_dir)
    sock = bind(host, port)
    admin_sock = bind(admin_host, admin_port) if admin_port is not None else None
    channels: list[socket.socket] = []
    children = []
    context = multiprocessing.get_context("fork")
    for _ in range(workers - 1):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        child = context.Process(target=_worker, daemon=True,
                                args=(fleet_dir, passphrase, db_url, config, None),
                                kwargs={"dealt_from": theirs, "alerts": alerts,
                                        "close_first": [s for s in (sock, admin_sock, ours,
                                                                    *channels) if s]})
        child.start()
        theirs.close()
        channels.append(ours)
        children.append(child)
    try:
        _worker(fleet_dir, passphrase, db_url, config, announce, sock=sock, channels=channels,
                admin_sock=admin_sock, update_refresh=update_refresh, alerts=alerts,
                quiet_tick=quiet_tick)
    finally:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)
        for child in children:
            child.join(10)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
