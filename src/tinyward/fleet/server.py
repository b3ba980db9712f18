"""The fleet server: devices post signed reports over mutual TLS 1.3; admins read status.

The HTTP layer only: TLS, limits, authentication and JSON. The decision about a report is
:func:`tinyward.fleet.ingest.decide` (pure), storage is a
:class:`~tinyward.fleet.store.ReportStore`, and process management (sockets, workers,
signals) is in :mod:`tinyward.fleet.runner`. The API is described by ``openapi.json``
beside this file (served at ``/v1/openapi.json``) and in ``docs/fleet-server.md``.

Two applications on two listeners (:mod:`tinyward.fleet.runner`):

- the **device** listener (:meth:`FleetServer.make_device_app`) requires a client
  certificate from the fleet's device CA in the TLS handshake, so nobody without one gets
  as far as HTTP: ``POST /v1/reports``, ``POST /v1/reports/batch`` and ``GET /v1/health``.
  The certificate is re-checked here for purpose ``tls``, enrolment and revocation on
  every request.
- the **admin** listener (:meth:`FleetServer.make_admin_app`, loopback by default):
  ``GET /v1/devices``, ``GET /v1/devices/{id}``, ``GET /v1/fleet``, ``GET /v1/openapi.json``
  and the rollouts (``/v1/rollouts…``, :mod:`tinyward.fleet.rollouts`)
  for an administrator with the bearer token made by ``tinyward fleet admin-token`` (the
  server keeps only its SHA-256), and ``GET /v1/health``. Every admin call is written to
  the audit log (``FLEET_DIR/audit.log``); admin reads use their own database connection
  and thread, never the ingest's.

Every 4xx/5xx answer is JSON ``{"error": code, "reason": text}``.

Acknowledgement: ``stored_seq`` is sent only after the store's transaction is committed.
Concurrent requests share one commit (group commit), which amortises the fsync.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

import cbor2
from aiohttp import web, web_response
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.errors import BadInput
from tinyward.fleet.alerts import Alert, AlertSender
from tinyward.fleet.delivery import ChunkServer, repository_dir
from tinyward.fleet.devstate import DEVICE_STATES
from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.errors import BadCertificate, BadFleet, RevokedDevice, UnknownDevice
from tinyward.fleet.guards import (
    ADMIN_TOKEN_FILE,
    AdminToken,
    AuditLog,
    Refused,
    TokenBuckets,
)
from tinyward.fleet.incidents import QUIET, QuietDetector
from tinyward.fleet.ingest import Accept, IngestPolicy, Reject, decide
from tinyward.fleet.metrics import CONTENT_TYPE as METRICS_TYPE
from tinyward.fleet.metrics import FleetMetrics
from tinyward.fleet.oplog import OperatorLog
from tinyward.fleet.rollout import FAILED_STATES
from tinyward.fleet.rollouts import RolloutBook
from tinyward.fleet.rollouts_api import add_rollout_routes
from tinyward.fleet.store import DeviceUpdate, ReportStore
from tinyward.link.chunks import CHUNK_CONTENT_TYPE, FETCH_HEADER
from tinyward.trust.identity import is_device_id
from tinyward.trust.report import Report
from tinyward.update.meta import Offer, Version

REPORT_CONTENT_TYPES = ("application/cose", "application/cbor")
AUDIT_LOG_FILE = "audit.log"
SERVER_NAME = "tinyward"
DEVICES_PAGE = 100
MAX_DEVICES_PAGE = 500
#: Reports a device may have queued after an outage: the link queue's capacity
#: (``tinyward.link.queue.QueueConfig().capacity``; a test checks they agree).
CATCH_UP_REPORTS = 256
_OUTCOME = web.RequestKey("tinyward_outcome", str)  # the refusal code an audit line records
_DEVICE = web.RequestKey("tinyward_device", str)  # the authenticated device (log lines)
_log = logging.getLogger("tinyward.fleet.server")


#: Seconds between two runs of the rollouts' halt rule one device can cause (beyond its
#: first failure for a running rollout's target, checked at once): see _check_rollouts.
HALT_CHECK_SPACING = 10.0


@dataclass(frozen=True)
class ServerConfig:
    """Limits and timeouts of the fleet server (safe defaults).

    - ``max_body_bytes``: larger request bodies get 413 (aiohttp ``client_max_size``).
    - ``max_batch``: reports per batch request.
    - ``report_interval``: the schedule (seconds between reports) of a device whose
      enrolment recorded none (enrolled before schedules were); every other device's
      own declared schedule (``fleet enroll --report-interval``, ``fleet set-schedule``)
      is read from the fleet's records.
    - ``rate_per_second`` / ``burst``: each device's token bucket, in reports, per worker
      process (with N workers a device that reaches several of them gets up to N times).
      The rate defaults to twice the device's own schedule (``2 / interval``: a device
      that was offline catches up one extra report per interval); ``rate_per_second``
      sets one rate for every device instead (tests, or an operator's override). The
      burst defaults to :data:`CATCH_UP_REPORTS` + ``max_batch`` = 306 reports: a full
      link queue sent at once after an outage, plus one batch sent again after its
      acknowledgement was lost (replays take tokens too). So over any T seconds a device
      gets at most 306 + 2 T / interval reports: 2.85 times its schedule over an hour,
      never the 500 times of the old fleet-wide 50/s. Every request takes its tokens
      before its body is decoded, malformed ones included; a batch takes one per report.
    - ``max_incident_kinds_per_device``: distinct incident kinds kept per device; further
      new kinds are counted under ``other`` (the store).
    - ``max_connections`` / ``max_connections_per_ip``: concurrent connections per worker
      that have finished their handshake (devices on the device listener).
    - ``max_connections_per_device``: concurrent connections of one enrolled device, per
      worker (a device needs one; the rest is room for reconnecting while a dead one has
      not timed out yet). One device's certificate cannot take the slots of the others.
    - ``max_handshakes`` / ``max_handshakes_per_ip``: connections still in their TLS
      handshake (nobody is authenticated yet), per worker; over the per-address cap a
      new one is closed at once, at the total the oldest makes room. They never count
      against the connections above.
    - ``handshake_timeout``: a TLS handshake must finish within it.
    - ``admin_max_connections``: concurrent connections on the admin listener.
    - ``idle_timeout``: a connection must deliver a complete request head within it after
      connecting or after its previous answer (slow headers are cut here).
    - ``body_timeout``: the body must arrive within it once the head has (slow bodies).
    - ``commit_window``: seconds a report waits for reports of other requests to share
      its commit (group commit; 0: commit at once). Adds at most this to an ack.
    - ``unsafe_client_cert_optional``: the assessment lab's control only (``fleet serve
      --unsafe-client-cert-optional``, hidden): the device listener lets clients without
      a certificate finish the handshake (:func:`~tinyward.fleet.runner.server_ssl_context`).
    """

    policy: IngestPolicy = field(default_factory=IngestPolicy)
    max_body_bytes: int = 64 * 1024
    max_batch: int = 50
    report_interval: float = 10.0
    rate_per_second: float | None = None
    burst: float | None = None
    max_incident_kinds_per_device: int = 64
    max_connections: int = 1024
    max_connections_per_ip: int = 256
    max_connections_per_device: int = 4
    max_handshakes: int = 256
    max_handshakes_per_ip: int = 16
    handshake_timeout: float = 5.0
    admin_max_connections: int = 32
    idle_timeout: float = 15.0
    body_timeout: float = 10.0
    commit_window: float = 0.005
    unsafe_client_cert_optional: bool = False

    @property
    def rate(self) -> float:
        """Reports per second of a device without a declared schedule: ``rate_per_second``,
        or twice the fallback schedule."""
        return self.rate_for(None)

    def rate_for(self, interval: float | None) -> float:
        """Reports per second of a device that declared ``interval`` (None: none):
        ``rate_per_second`` if set, else twice the schedule."""
        if self.rate_per_second is not None:
            return self.rate_per_second
        return 2.0 / (self.report_interval if interval is None else interval)

    @property
    def device_burst(self) -> float:
        """Each device's bucket size in reports: ``burst``, or a full link queue plus a
        batch (:data:`CATCH_UP_REPORTS` + ``max_batch``)."""
        return float(CATCH_UP_REPORTS + self.max_batch) if self.burst is None else self.burst


def error_response(status: int, code: str, reason: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> web.Response:
    """The JSON error body every refusal uses."""
    return web.json_response({"error": code, "reason": reason, **extra}, status=status,
                             headers=headers)


class _GroupCommitter:
    """Collects appends from concurrent requests and commits them in one transaction.

    Devices on a schedule send one report per request, each on its own connection, so
    without a wait nearly every commit held one report and paid a whole transaction
    (BEGIN IMMEDIATE, the lock, the fsync of the WAL: about as much CPU as the rest of the
    request). The first append of a commit therefore waits up to ``window`` seconds for
    others (at most ``max_groups`` requests a commit, which go at once). Nobody is
    acknowledged before the commit that holds their report, so acknowledged still means
    durable; the wait adds at most ``window`` to an acknowledgement.
    """

    def __init__(self, store: ReportStore, executor: ThreadPoolExecutor,
                 window: float = 0.0, max_groups: int = 256) -> None:
        self._store, self._executor = store, executor
        self._window, self._max_groups = window, max_groups
        self._pending: list[tuple[str, list[tuple[Report, bytes]], asyncio.Future[int]]] = []
        self._first_at = 0.0  # loop time of the oldest pending append
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def append(self, device_id: str, items: list[tuple[Report, bytes]]) -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        if not self._pending:
            self._first_at = loop.time()
        self._pending.append((device_id, items, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        elif (len(self._pending) >= self._max_groups and self._waiter is not None
              and not self._waiter.done()):
            self._waiter.set_result(None)  # full: commit now
        return await future

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the oldest pending append is ``window`` old or the commit is full."""
        delay = self._first_at + self._window - loop.time()
        if delay <= 0 or len(self._pending) >= self._max_groups:
            return
        self._waiter = loop.create_future()
        timer = loop.call_later(delay, _wake, self._waiter)
        try:
            await self._waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                if self._window > 0:
                    await self._gather(loop)
                batch, self._pending = self._pending, []
                groups = [(device, items) for device, items, _ in batch]
                try:
                    stored = await loop.run_in_executor(
                        self._executor, self._store.append_many, groups, int(time.time()))
                except Exception as error:  # noqa: BLE001 - any storage failure: nobody is acked
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                else:
                    for (_, _, future), seq in zip(batch, stored, strict=True):
                        if not future.done():
                            future.set_result(seq)
        finally:
            self._task = None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class FleetServer:
    """The aiohttp application of the fleet server, over a directory and a store."""

    def __init__(self, directory: FleetDirectory, store: ReportStore,
                 config: ServerConfig | None = None, *,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 delivery: ChunkServer | None = None,
                 alerts: AlertSender | None = None) -> None:
        self.directory = directory
        #: Counters for ``GET /metrics`` (fleet/metrics.py), the operator's log lines
        #: (fleet/oplog.py) and where incidents are sent (fleet/alerts.py; None: nowhere).
        self.metrics = FleetMetrics(self._device_states)
        self.oplog = OperatorLog()
        self.alerts = alerts
        if alerts is not None:
            alerts.on_outcome = self.metrics.alert
        # Update delivery: one chunk of the TUF repository per report (fleet/delivery.py).
        # The offer for each device is the rollout's decision (fleet/rollout.py).
        self.delivery = delivery or ChunkServer(repository_dir(directory.fleet.directory),
                                                offers=self.offer_for)
        self.store = store
        self.config = config or ServerConfig()
        self.admin = AdminToken(directory.fleet.directory / ADMIN_TOKEN_FILE)
        self.audit = AuditLog(directory.fleet.directory / AUDIT_LOG_FILE)
        self.buckets = TokenBuckets(self.config.rate, self.config.device_burst)
        self.clock = clock
        self.monotonic = monotonic  # the rate limit's clock (a test may drive it)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._committer = _GroupCommitter(store, self._executor, self.config.commit_window)
        # Admin reads: their own connection and thread, so that a slow query (a large
        # fleet, many incident kinds) never delays an acknowledgement.
        opener = getattr(store, "reader", None)
        self._reader: ReportStore = opener() if callable(opener) else store
        self.quiet = QuietDetector(directory, self._reader, started=clock())
        self._admin_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="admin")
        self._seq_cache: dict[str, int] = {}  # device -> last stored seq (this process)
        self._warming: set[asyncio.Task[None]] = set()  # meet_connection's reads in flight
        self._openapi = resources.files("tinyward.fleet").joinpath("openapi.json").read_bytes()
        self.rollouts = RolloutBook(directory.fleet.directory, clock=clock,
                                    audit=self._audit_automatic)
        # device -> its last update status seen by this process (rollout checks on change)
        self._upd_seen: dict[str, tuple[object, ...]] = {}
        #: device -> when it last ran the halt rule; (device, target) -> the rollouts'
        #: identity when that failure last ran it (see _check_rollouts).
        self._upd_checked: dict[str, float] = {}
        self._upd_failures: dict[tuple[str, tuple[str, str]], tuple[int, ...]] = {}
        self._halt_deferred = False
        self._halt_checked_at = float("-inf")

    # -- application --------------------------------------------------------------------

    def make_device_app(self) -> web.Application:
        """Device endpoints (served where every client has shown a device certificate)."""
        _hide_server_software()
        app = web.Application(client_max_size=self.config.max_body_bytes,
                              middlewares=[self._observed, _json_errors])
        app.router.add_get("/v1/health", self.health)
        app.router.add_post("/v1/reports", self.post_report)
        app.router.add_post("/v1/reports/batch", self.post_batch)
        app.on_response_prepare.append(_server_header)
        app.on_cleanup.append(self._cleanup)
        return app

    def make_admin_app(self) -> web.Application:
        """Administration (bearer token), audited, on its own listener."""
        _hide_server_software()
        app = web.Application(client_max_size=4096, middlewares=[self._audited, _json_errors])
        app.router.add_get("/v1/health", self.health)
        app.router.add_get("/v1/devices", self.list_devices)
        app.router.add_get("/v1/devices/{device_id}", self.get_device)
        app.router.add_get("/v1/fleet", self.get_fleet)
        app.router.add_get("/v1/openapi.json", self.get_openapi)
        app.router.add_get("/metrics", self.get_metrics)
        app.router.add_get("/v1/incidents", self.list_incidents)
        add_rollout_routes(app, self)
        # The dashboard (HTML, session login; docs/dashboard.md), audited like the API.
        from tinyward.fleet.dashboard import add_dashboard_routes
        self.dashboard = add_dashboard_routes(app, self, _OUTCOME)
        app.on_response_prepare.append(_server_header)
        app.on_cleanup.append(self._admin_cleanup)
        return app

    async def _cleanup(self, _: web.Application) -> None:
        self._executor.shutdown(wait=True)

    async def _admin_cleanup(self, _: web.Application) -> None:
        self._admin_executor.shutdown(wait=True)
        if self._reader is not self.store:
            self._reader.close()

    @web.middleware
    async def _observed(self, request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                        ) -> web.StreamResponse:
        """Ingest latency of acknowledged reports, refusals by reason, and one operator
        log line per refusal (after _json_errors has made the answer)."""
        started = time.monotonic()
        response = await handler(request)
        if response.status < 400:
            if request.method == "POST":
                self.metrics.acknowledged("batch" if request.path.endswith("/batch")
                                          else "report", time.monotonic() - started)
            return response
        reason = request.get(_OUTCOME, "error")
        self.metrics.refused(reason)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.oplog.refusal("device", str(peer[0]) if peer else "?", reason,
                           device=request.get(_DEVICE), status=response.status)
        return response

    async def _store_call(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _admin_call(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._admin_executor, function,
                                                                *args)

    @web.middleware
    async def _audited(self, request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
        """One audit line per admin request (after _json_errors has made the answer)."""
        response = await handler(request)
        outcome = request.get(_OUTCOME, "ok")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if response.status >= 400:
            self.metrics.refused(outcome)
            self.oplog.refusal("admin", str(peer[0]) if peer else "?", outcome,
                               status=response.status)
        try:
            await self._admin_call(functools.partial(
                self.audit.record, address=str(peer[0]) if peer else "?",
                method=request.method, path=request.path, status=response.status,
                outcome=outcome))
        except OSError:
            _log.exception("writing the audit log failed")
        return response

    # -- authentication -----------------------------------------------------------------

    def _device_of(self, request: web.Request) -> str:
        """The device ID of the request's verified TLS client certificate, or Refused."""
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            raise Refused(401, "client_certificate_required",
                          "device endpoints need the device's TLS client certificate")
        try:
            device_id = self.directory.tls_identity(der)
        except RevokedDevice:
            raise Refused(403, "revoked", "this device has been revoked from the fleet") from None
        except UnknownDevice:
            raise Refused(403, "unknown_device",
                          "this device is not enrolled in the fleet") from None
        except BadCertificate as error:
            raise Refused(403, "bad_certificate", str(error)) from None
        except BadFleet:  # e.g. a schedule out of bounds: the fleet's record, not the device
            _log.warning("the fleet's record of a connecting device is damaged")
            raise Refused(503, "device_record_damaged",
                          "the fleet's record of this device is damaged; an administrator "
                          "must repair it (tinyward fleet devices); retry later") from None
        request[_DEVICE] = device_id
        return device_id

    def meet_connection(self, transport: asyncio.BaseTransport) -> str | None:
        """Look a freshly connected device up before its first request arrives; returns
        its device ID (None if the certificate names no enrolled device).

        Called once per connection, right after the TLS handshake. A device holds its
        connection for hours, so checking its certificate, loading its report key and
        declared schedule (its rate limit) and reading its last stored sequence number
        belong with the handshake, not with its first report. This only fills caches:
        every request still runs the full checks (:meth:`_device_of`, revocation, …), and
        any refusal is left to the request, which answers it with a reason. A connection
        without a client certificate (an admin) costs nothing here; a certificate from the
        device CA that does not check out (unknown device, wrong purpose) costs the same
        lookup its first request would, and
        is not cached, so each such connection pays it again.
        """
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return None
        try:
            device_id = self.directory.tls_identity(der)
        except BadInput:  # unknown, revoked, not ours …: the first request is refused
            return None
        except Exception:  # noqa: BLE001 - a bug must not cost the connection its answer
            _log.exception("looking up a connected device failed")
            return None
        # Read again on every connection, never kept from an earlier one: with several
        # nodes the device may have reported elsewhere since (docs/scaling.md). The store
        # checks the sequence inside its transaction anyway; this keeps a replay's answer
        # (its stored_seq) current.
        self._seq_cache.pop(device_id, None)
        task = asyncio.get_running_loop().create_task(self._warm_last_seq(device_id))
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)
        return device_id

    async def _warm_last_seq(self, device_id: str) -> None:
        try:
            await self._last_seq(device_id)
        except Exception:  # noqa: BLE001 - only a cache: the first request reads it again
            _log.debug("reading the last sequence number of %s failed", device_id,
                       exc_info=True)

    def _admin_of(self, request: web.Request) -> None:
        self.admin.check(request.headers.get("Authorization"))

    # -- device endpoints ---------------------------------------------------------------

    def _check_content_type(self, request: web.Request, allowed: Sequence[str]) -> None:
        if request.content_type not in allowed:
            raise Refused(415, "unsupported_content_type",
                          f"send the report as {' or '.join(allowed)}, not "
                          f"{request.content_type or 'no content type'}")
        cose_type = request.headers.get("Content-Type", "")
        if request.content_type == "application/cose" and "cose-type" in cose_type:
            params = {k.strip().lower(): v.strip().strip('"') for k, _, v in
                      (p.partition("=") for p in cose_type.split(";")[1:])}
            if params.get("cose-type") != "cose-sign1":
                raise Refused(415, "unsupported_content_type",
                              'reports are COSE_Sign1: cose-type="cose-sign1"')

    async def _body(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            raise Refused(413, "body_too_large",
                          f"the body is over the {self.config.max_body_bytes}-byte limit")
        try:
            async with asyncio.timeout(self.config.body_timeout):
                body = await request.read()
        except TimeoutError:
            raise Refused(408, "body_timeout", "the request body arrived too slowly") from None
        if not body:
            raise Refused(400, "malformed", "the request body is empty")
        return body

    def _rate(self, device_id: str, n: int) -> None:
        # The device's own declared schedule, cached by the directory when the device
        # connected (and re-read when its status file changes): no disk read here.
        rate = self.config.rate_for(self.directory.report_interval(device_id))
        wait = self.buckets.take(device_id, n, self.monotonic(), rate)
        if wait is not None:
            retry = "60" if wait == float("inf") else str(max(1, int(wait + 0.999)))
            raise Refused(429, "rate_limited", "too many reports from this device; slow down",
                          retry_after=retry)

    async def _last_seq(self, device_id: str) -> int:
        last = self._seq_cache.get(device_id)
        if last is None:
            last = int(await self._store_call(self.store.last_seq, device_id))
            self._seq_cache[device_id] = max(last, self._seq_cache.get(device_id, 0))
        return self._seq_cache[device_id]

    async def _commit(self, device_id: str, items: list[tuple[Report, bytes]]) -> int:
        try:
            stored = await self._committer.append(device_id, items)
        except Exception:  # noqa: BLE001 - sqlite3.Error, OSError …: refuse, never ack
            self._seq_cache.pop(device_id, None)
            raise Refused(503, "storage_unavailable",
                          "the report could not be stored; it was not acknowledged, retry later"
                          ) from None
        self._seq_cache[device_id] = max(stored, self._seq_cache.get(device_id, 0))
        self.metrics.stored(len(items))
        now = self.clock()
        for report, _ in items:
            for kind, count in report.incidents.items():
                if count:
                    self.metrics.incident(kind, count)
                    if self.alerts is not None:  # a bounded queue: never waits
                        self.alerts.send(Alert(device_id, kind, count, now, report.timestamp,
                                               report.seq, f"report seq {report.seq}"))
        return stored

    async def post_report(self, request: web.Request) -> web.Response:
        device_id = self._device_of(request)
        # The token first, then the size, then the body is decoded: a request the bucket
        # refuses costs nothing more, and a malformed one costs its token all the same.
        self._rate(device_id, 1)
        self._check_content_type(request, REPORT_CONTENT_TYPES)
        size = self.config.policy.size
        if request.content_length is not None and request.content_length != size:
            if request.content_length > self.config.max_body_bytes:
                raise Refused(413, "body_too_large",
                              f"the body is over the {self.config.max_body_bytes}-byte limit")
            raise Refused(400, "bad_size", f"a report is exactly {size} bytes, not "
                          f"{request.content_length}")
        body = await self._body(request)
        if len(body) != size:
            raise Refused(400, "bad_size", f"a report is exactly {size} bytes, not {len(body)}")
        last = await self._last_seq(device_id)
        decision = decide(body, device_id, self.directory, last, int(self.clock()),
                          self.config.policy)
        fetch = request.headers.get(FETCH_HEADER)
        if isinstance(decision, Reject):
            request[_OUTCOME] = decision.code
            if fetch is not None and decision.code == "replay" and decision.stored_seq is not None:
                # A report sent again is answered like any other: same frame size.
                return self._frame(device_id, fetch, decision.stored_seq, decision.status,
                                   "replay")
            return _reject_response(decision)
        stored = await self._commit(device_id, [(decision.report, decision.raw)])
        await self._check_rollouts([decision.report])
        if fetch is not None:
            return self._frame(device_id, fetch, stored, installed=_installed(decision.report))
        return web.json_response({"stored_seq": stored})

    def _frame(self, device_id: str, fetch: str, stored: int, status: int = 200,
               error: str | None = None, installed: dict[str, str] | None = None
               ) -> web.Response:
        """The fixed-size answer to a report that carried a fetch request: the
        acknowledgement, one chunk (or filler) of the update repository, and the offer for
        the versions the report says run (none for a report sent again)."""
        return web.Response(body=self.delivery.answer(device_id, fetch, stored, error,
                                                      installed),
                            status=status, content_type=CHUNK_CONTENT_TYPE)

    async def post_batch(self, request: web.Request) -> web.Response:
        device_id = self._device_of(request)
        size = self.config.policy.size
        # Tokens before anything else, for as many reports as the announced length can
        # hold (at least one): 700 malformed batches got 700 x 400 and never 429 before.
        taken = max(1, min(self.config.max_batch, (request.content_length or 0) // (size + 3)))
        self._rate(device_id, taken)
        self._check_content_type(request, ("application/cbor",))
        body = await self._body(request)
        items = split_batch(body, size, self.config.max_batch)
        if len(items) > taken:  # no Content-Length (chunked): the rest of the tokens now
            self._rate(device_id, len(items) - taken)
        last = await self._last_seq(device_id)
        now = int(self.clock())
        accepted: list[tuple[Report, bytes]] = []
        results: list[dict[str, Any]] = []
        # The same device for every item: look it up once per request, not once per report.
        # Revocation is read again here, after the body has arrived: a device revoked while
        # it uploaded does not get its batch stored.
        snapshot = _OneDevice(device_id, self.directory)
        for item in items:
            decision = decide(item, device_id, snapshot, last, now, self.config.policy)
            if isinstance(decision, Accept):
                accepted.append((decision.report, decision.raw))
                last = decision.report.seq
                results.append({"seq": last, "status": 200, "code": "stored"})
            else:
                self.metrics.refused(decision.code)  # the batch itself is answered 200
                results.append({"seq": None, "status": decision.status, "code": decision.code,
                                "reason": decision.reason})
        stored = await self._commit(device_id, accepted) if accepted else last
        await self._check_rollouts([report for report, _ in accepted])
        return web.json_response({"stored_seq": stored, "results": results})

    # -- rollouts -----------------------------------------------------------------------

    async def _check_rollouts(self, reports: Sequence[Report]) -> None:
        """Apply the rollouts' halt rule before acknowledging a report that can change a
        rollout's decided outcomes: a failed or reverted update, or new installed versions
        (in-progress states do not count in the rule, so they do not run it).

        Bounded per device, because the rule costs ~18 µs per device and running rollout
        and one enrolled device must not make every acknowledgement pay that: a report
        that repeats what the rule has seen costs nothing; a device's first failure for a
        running rollout's target (or an unnamed one) in the rollouts' current state (a
        start or resume makes a new one) runs the rule at once; any other change runs it
        at most once per :data:`HALT_CHECK_SPACING` seconds per device, and a change held
        back by that is checked with the next report anyone sends after the spacing."""
        now = self.monotonic()
        urgent = spaced = False
        identity: tuple[int, ...] | None = None
        running: set[tuple[str, str]] | None = None
        for report in reports:
            update, device_id = report.update, report.device_id
            if update is None:
                continue
            failed = update.state in FAILED_STATES
            if identity is None:
                identity, running = self._rollouts_now()
            seen = (failed, tuple(sorted(update.versions.items())),
                    update.target if failed else None, identity if failed else None)
            if self._upd_seen.get(device_id) == seen:
                continue
            if len(self._upd_seen) >= 100_000:
                self._upd_seen.clear()
                self._upd_checked.clear()
                self._upd_failures.clear()
            self._upd_seen[device_id] = seen
            target = update.target or ("", "")
            if failed and running is not None and (target in running or target == ("", "")) \
                    and self._upd_failures.get((device_id, target)) != identity:
                self._upd_failures[(device_id, target)] = identity
                urgent = True
            elif now - self._upd_checked.get(device_id, -HALT_CHECK_SPACING) \
                    >= HALT_CHECK_SPACING:
                self._upd_checked[device_id] = now
                spaced = True
            else:
                self._halt_deferred = True
        if not (urgent or spaced) and (
                not self._halt_deferred or now - self._halt_checked_at < HALT_CHECK_SPACING):
            return
        self._halt_deferred, self._halt_checked_at = False, now
        try:
            if running is not None and not running:  # nothing running: nothing can halt
                return
            halted = await self._admin_call(self.rollouts.evaluate, self._reader,
                                            self.directory)
        except Exception:  # noqa: BLE001 - the report is stored; the rule runs again next time
            _log.exception("applying the rollouts' halt rule failed")
            # The reports that asked for it are marked seen: held back, the rule runs again
            # with the next report after the spacing (not only on another device's change).
            self._halt_deferred = True
            return
        for rollout in halted:
            _log.warning("rollout %s halted: %s", rollout.rollout_id, rollout.why)

    def _rollouts_now(self) -> tuple[tuple[int, ...], set[tuple[str, str]] | None]:
        """The rollouts file's identity (any change, e.g. a resume, makes a new one: atomic
        writes) and the (component, version) of the running rollouts (None: unreadable;
        the rule then runs, and says why it cannot)."""
        try:
            found = os.stat(self.rollouts.path)
        except OSError:
            return (), set()
        try:
            running = {(r.component, str(r.version)) for r in self.rollouts.rollouts()
                       if not r.halted}  # cached: re-read only when the file changed
        except Exception:  # noqa: BLE001 - damaged: evaluate() reports it
            running = None
        return (found.st_ino, found.st_mtime_ns, found.st_size), running

    def _audit_automatic(self, action: str, rollout_id: str, outcome: str) -> None:
        """Audit lines for the rollout changes the server makes by itself (the admin API's
        own calls are audited by :meth:`_audited`)."""
        if action == "auto-halt":
            try:
                self.audit.record(address="server", method="AUTO",
                                  path=f"/v1/rollouts/{rollout_id}/halt", status=200,
                                  outcome=outcome)
            except OSError:
                _log.exception("writing the audit log failed")

    def offer_for(self, device_id: str, installed_versions: Mapping[str, str | Version]
                  ) -> Offer | None:
        """The update offer for an authenticated device (None: none), for the delivery
        channel. Its cohort comes from the fleet's records, never from the device."""
        if self.directory.is_revoked(device_id):  # also refreshes the cached status file
            return None
        if self.directory.is_quarantined(device_id):  # evidence is kept; no new software
            return None
        return self.rollouts.offer_for(device_id, self.directory.cohort(device_id),
                                       installed_versions)

    # -- open and admin endpoints -------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def get_metrics(self, request: web.Request) -> web.Response:
        """Prometheus metrics (fleet/metrics.py). Behind the admin token like every admin
        endpoint: the counts say how large the fleet is, how many devices are quiet and
        which attacks are refused, a map for an attacker; a Prometheus job sends the token
        with ``authorization: {credentials_file: …}``."""
        self._admin_of(request)
        body = await self._admin_call(self.metrics.render)
        return web.Response(body=body, headers={"Content-Type": METRICS_TYPE,
                                                "Cache-Control": "no-store"})

    async def check_quiet(self) -> int:
        """One tick of the quiet-device detector (fleet/incidents.py): reads on the admin
        thread, the few incidents it raises through the store's thread. Returns how many
        were raised. ``fleet serve`` runs it every QUIET_TICK seconds in its first worker."""
        now = self.clock()
        due = await self._admin_call(self.quiet.tick, now)
        for device_id, evidence in due:
            incident = await self._store_call(self.quiet.raise_quiet, self.store, device_id,
                                              evidence, now)
            self.metrics.incident(QUIET)
            self.oplog.incident(device_id, QUIET)
            if self.alerts is not None:
                self.alerts.send(Alert(device_id, QUIET, 1, incident.at, None, None,
                                       evidence))
        return len(due)

    def _device_states(self) -> dict[str, int]:
        """Enrolled devices by state (fleet/devstate.py), for the metrics gauge: from the
        quiet detector's latest full pass (no store reads; each device at most one pass
        old), or, before a pass is done (or without the detector), read now (two indexed
        reads per device: ~1 s for 10,000 devices on the admin thread)."""
        counts = dict.fromkeys(DEVICE_STATES, 0)
        found = (self.quiet.states if self.quiet.watch.passes
                 else self.device_states(self.clock()))
        for state in found.values():
            counts[state] += 1
        return counts

    def device_states(self, now: float) -> dict[str, str]:
        """Every enrolled device's state at ``now`` (reads the store: admin thread; about
        one indexed row per device)."""
        return {device_id: self.quiet.state(device_id, now)[0]
                for device_id in sorted(self.quiet.ids())}

    async def list_incidents(self, request: web.Request) -> web.Response:
        """Incidents, newest first: ``?device=ID``, ``?kind=K``, ``?since=UNIX_S``,
        ``?limit=N`` (1…500, default 100)."""
        self._admin_of(request)
        query = request.query
        try:
            limit = int(query.get("limit", str(DEVICES_PAGE)))
            since = int(query.get("since", "0"))
        except ValueError:
            limit, since = -1, 0
        if not 1 <= limit <= MAX_DEVICES_PAGE or not 0 <= since < 2**62:  # SQL's BIGINT
            raise Refused(400, "bad_limit", f"limit must be 1 to {MAX_DEVICES_PAGE} and "
                          "since a Unix time")
        device = query.get("device") or None
        if device is not None and not is_device_id(device):
            raise Refused(400, "bad_cursor", "device must be a device ID")
        kind = query.get("kind") or None
        found = await self._admin_call(functools.partial(
            self._reader.incidents, device, since=since, kind=kind, limit=limit))
        return web.json_response({"incidents": [asdict(i) for i in found]},
                                 headers={"Cache-Control": "no-store"})

    async def get_openapi(self, request: web.Request) -> web.Response:
        self._admin_of(request)
        return web.Response(body=self._openapi, content_type="application/json")

    def _device_json(self, device_id: str) -> dict[str, Any] | None:
        try:
            enrolled = self.directory.fleet.device(device_id)
        except UnknownDevice:
            return None
        status = self._reader.device_status(device_id)
        return {
            "device_id": device_id,
            "enrolled_at": enrolled.enrolled_at.isoformat(),
            "revoked": enrolled.revoked,
            "report_interval": enrolled.report_interval,
            "last_seq": status.last_seq if status else 0,
            "reports": status.reports if status else 0,
            "last_report_time": status.last_report_time if status else None,
            "last_received_at": status.last_received_at if status else None,
            "health": status.health if status else None,
            "incidents": status.incidents if status else {},
            "cohort": enrolled.cohort,
            "update": _update_json(status.update) if status and status.update else None,
        }

    async def list_devices(self, request: web.Request) -> web.Response:
        """One page of enrolled devices, by device ID: ``?limit=N`` (1…500, default 100)
        and ``?after=ID`` (the ``next`` of the previous page)."""
        self._admin_of(request)
        try:
            limit = int(request.query.get("limit", str(DEVICES_PAGE)))
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_DEVICES_PAGE:
            raise Refused(400, "bad_limit", f"limit must be 1 to {MAX_DEVICES_PAGE}")
        after = request.query.get("after", "")
        if after and not is_device_id(after):
            raise Refused(400, "bad_cursor", "after must be a device ID (the previous 'next')")

        def collect() -> dict[str, Any]:
            ids = sorted(d.device_id for d in self.directory.fleet.devices()
                         if d.device_id > after)
            page = ids[:limit]
            found = [d for d in (self._device_json(i) for i in page) if d is not None]
            return {"devices": found, "next": page[-1] if len(ids) > limit else None}

        return web.json_response(await self._admin_call(collect),
                                 headers={"Cache-Control": "no-store"})

    async def get_device(self, request: web.Request) -> web.Response:
        self._admin_of(request)
        device_id = request.match_info["device_id"]
        if not is_device_id(device_id):
            raise Refused(404, "unknown_device", "not a device ID (64 lowercase hex characters)")
        found = await self._admin_call(self._device_json, device_id)
        if found is None:
            raise Refused(404, "unknown_device", "no such device is enrolled in this fleet")
        return web.json_response(found, headers={"Cache-Control": "no-store"})

    async def get_fleet(self, request: web.Request) -> web.Response:
        self._admin_of(request)

        def collect() -> dict[str, Any]:
            devices = self.directory.fleet.devices()
            totals = asdict(self._reader.fleet_status())
            return {
                "fleet_id": self.directory.fleet.fleet_id,
                "devices_enrolled": len(devices),
                "devices_revoked": sum(1 for d in devices if d.revoked),
                "devices_reporting": totals["devices"],
                "reports": totals["reports"],
                "degraded_devices": totals["degraded_devices"],
                "incidents": totals["incidents"],
            }

        return web.json_response(await self._admin_call(collect),
                                 headers={"Cache-Control": "no-store"})


def _update_json(update: DeviceUpdate) -> dict[str, Any]:
    return {"state": update.state, "versions": update.versions, "why": update.why,
            "target": None if update.target is None else
            {"component": update.target[0], "version": update.target[1]},
            "seq": update.seq}


def split_batch(body: bytes, size: int, max_batch: int) -> list[bytes]:
    """The reports of a batch body, without decoding it: raises :class:`Refused`.

    A batch is the deterministic CBOR array of 1…``max_batch`` byte strings of exactly
    ``size`` bytes each, so its length gives the number of reports, every report sits at
    a known offset, and the body must be exactly the encoding of those slices (one
    ``cbor2.dumps``, ≈ 1 µs for 50 reports). Nothing a device sends is decoded here.
    """
    layout = _batch_layouts(size, max_batch).get(len(body))
    if layout is None:
        raise Refused(400, "malformed", f"a batch is a CBOR array of 1 to {max_batch} byte "
                      f"strings of exactly {size} bytes (signed reports); {len(body)} bytes "
                      "is no such array")
    first, step = layout
    items = [body[at:at + size] for at in range(first, len(body), step)]
    if cbor2.dumps(items) != body:
        raise Refused(400, "malformed", "a batch is a deterministically encoded CBOR array of "
                      f"byte strings of exactly {size} bytes (signed reports)")
    return items


@functools.lru_cache(maxsize=8)
def _batch_layouts(size: int, max_batch: int) -> dict[int, tuple[int, int]]:
    """Body length -> (offset of the first report, distance between reports), per count."""
    item_head = len(cbor2.dumps(bytes(size))) - size
    layouts = {}
    for count in range(1, max_batch + 1):
        array_head = len(cbor2.dumps([0] * count)) - count
        layouts[array_head + count * (item_head + size)] = (array_head + item_head,
                                                            item_head + size)
    return layouts


def _hide_server_software() -> None:
    """No ``Server: Python/3.11 aiohttp/…`` (a free hint of what to attack).

    aiohttp fills the header from this module global when a response has none, also for
    the errors its HTTP parser answers before any application sees the request; the
    applications' own responses get ``Server: tinyward`` from :func:`_server_header`.
    """
    web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]


async def _server_header(_: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_NAME


class _OneDevice:
    """A DeviceDirectory answering for one device, from one lookup (per batch request)."""

    def __init__(self, device_id: str, directory: FleetDirectory) -> None:
        self._device_id = device_id
        self._revoked = directory.is_revoked(device_id)
        self._key = directory.report_key(device_id)

    def report_key(self, device_id: str) -> ec.EllipticCurvePublicKey | None:
        return self._key if device_id == self._device_id else None

    def is_revoked(self, device_id: str) -> bool:
        return self._revoked if device_id == self._device_id else True


def _installed(report: Report) -> dict[str, str]:
    """The installed versions a report tells (its ``upd`` field; none without one)."""
    if report.update is None:
        return {}
    return {str(k): str(v) for k, v in report.update.versions.items()}


def _reject_response(decision: Reject) -> web.Response:
    extra: dict[str, Any] = {} if decision.stored_seq is None else {
        "stored_seq": decision.stored_seq}
    return error_response(decision.status, decision.code, decision.reason, **extra)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 408: "timeout", 413: "body_too_large",
               415: "unsupported_content_type", 429: "rate_limited"}


@web.middleware
async def _json_errors(request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
    """Turn every refusal (ours and aiohttp's) into a JSON body with a reason."""
    try:
        return await handler(request)
    except Refused as refused:
        headers = {}
        extra = dict(refused.extra)
        if refused.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if "retry_after" in extra:
            headers["Retry-After"] = extra.pop("retry_after")
        request[_OUTCOME] = refused.code  # for the audit log
        return error_response(refused.status, refused.code, refused.reason, headers, **extra)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {k: v for k, v in error.headers.items()
                   if k.lower() in ("allow", "www-authenticate", "retry-after")}
        code = _HTTP_CODES.get(error.status, "error")
        reason = error.reason if error.status != 413 else "the request body is too large"
        request[_OUTCOME] = code
        return error_response(error.status, code, reason, headers)
    except Exception:  # noqa: BLE001 - last resort so that even a bug answers JSON
        # A bug, not bad input: log it with its traceback, answer without details.
        _log.exception("internal error handling %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed; nothing was stored")
