"""Prometheus metrics of the fleet server (``GET /metrics`` on the admin listener).

What an operator graphs and alerts on: reports stored, refusals by reason, incidents by
kind, devices by state and the ingest latency (request received → acknowledgement sent).

Label values are bounded, so nothing a device or a stranger sends can grow the metrics
without limit (each label value is a new time series in Prometheus):

- no device IDs anywhere (a fleet of 10,000 devices would be 10,000 series per metric);
- ``reason``: one of :data:`REFUSAL_REASONS` (every code ``fleet/ingest.py``,
  ``fleet/guards.py``, the server and the listeners refuse with), anything else ``other``;
- ``kind``: incident kinds are chosen by devices (opaque text), so only the first
  :data:`MAX_KINDS` distinct kinds a process sees get their own series; later ones count
  under ``other``;
- ``state``: :data:`tinyward.fleet.devstate.DEVICE_STATES`.

``tinyward_reports_stored_total`` counts acknowledgements of reports the store was given;
with several workers, a report sent again to a worker that has not seen its sequence
number yet (another worker stored it) is acknowledged again and counted again, while the
store keeps it once (its device totals in ``GET /v1/fleet`` are exact).

Several worker processes (``fleet serve --workers N``): each worker counts what it serves,
and the admin listener (first worker only) must show the fleet's totals. The server then
runs prometheus_client's *multiprocess mode* (:func:`enable_multiprocess`): every worker
writes its counters to memory-mapped files in a private folder made at start, and a scrape
sums them (``MultiProcessCollector``); the folder is removed when the server stops. The
devices-by-state gauge comes from the first worker (its quiet detector's latest pass, see
``FleetServer._device_states``), so it is never summed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

#: ``text/plain; version=0.0.4`` (the exposition format Prometheus scrapes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Every refusal code the fleet server answers or a listener applies (ingest.decide,
#: guards, the server's own checks, the rollouts API, aiohttp's errors as _json_errors
#: names them, and the connection/handshake caps of the runner). Anything else is counted
#: as ``other``.
REFUSAL_REASONS = frozenset({
    # fleet/ingest.py
    "revoked", "unknown_device", "malformed", "signer_mismatch", "bad_signature", "bad_size",
    "bad_padding", "replay", "clock_skew",
    # fleet/guards.py (admin token) and the server
    "admin_token_not_configured", "admin_token_required", "bad_admin_token",
    "client_certificate_required", "bad_certificate", "device_record_damaged",
    "unsupported_content_type", "body_too_large", "body_timeout", "rate_limited",
    "storage_unavailable", "bad_limit", "bad_cursor", "internal_error",
    # fleet/rollouts_api.py
    "unknown_rollout", "rollout_conflict", "bad_rollout",
    # aiohttp's own refusals (server._HTTP_CODES)
    "bad_request", "unauthorized", "forbidden", "not_found", "method_not_allowed",
    "timeout",
    # the listeners (fleet/runner.py): before any HTTP
    "tls_handshake_failed", "handshake_cap", "connection_cap", "device_connection_cap",
})
OTHER = "other"
#: Distinct incident kinds with their own series, per process.
MAX_KINDS = 32
#: Ingest latency buckets in seconds: a stored report takes a few ms (group commit, fsync).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def enable_multiprocess(folder: Path) -> None:
    """Count in memory-mapped files under ``folder`` (shared by forked workers).

    Call before any :class:`FleetMetrics` is made and before forking. prometheus_client
    chooses the value class from the environment when it is first imported; the server
    imports it long before it knows how many workers it runs, so the choice is made
    again here (``values.ValueClass`` is what every metric reads when it is created)."""
    os.environ[_MULTIPROCESS_ENV] = str(folder)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> Path | None:
    """The folder of :func:`enable_multiprocess` (None: one process)."""
    found = os.environ.get(_MULTIPROCESS_ENV)
    return Path(found) if found else None


def mark_worker_dead(pid: int) -> None:
    """Drop a stopped worker's live gauges (prometheus_client's multiprocess rule; our
    counters and histograms are kept: they are what the worker did)."""
    from prometheus_client import multiprocess

    folder = multiprocess_dir()
    if folder is not None:
        multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]


class FleetMetrics:
    """The server's counters; :meth:`render` is the ``/metrics`` body.

    ``device_states``: called at scrape time, returns devices by state (in a thread: it
    reads the store)."""

    def __init__(self, device_states: Callable[[], Mapping[str, int]] | None = None) -> None:
        self._multi = multiprocess_dir()
        # Our own registry, never the process-wide default: two servers in one process
        # (tests) must not share counts or collide on names.
        self.registry = CollectorRegistry(auto_describe=True)
        self.reports = Counter("tinyward_reports_stored", "Reports stored (committed).",
                               registry=self.registry)
        self.refusals = Counter("tinyward_refusals", "Requests, reports and connections "
                                "refused, by reason.", ["reason"], registry=self.registry)
        self.incidents = Counter("tinyward_incidents", "Incidents received in reports or "
                                 "raised by the fleet (quiet devices), by kind.", ["kind"],
                                 registry=self.registry)
        self.alerts = Counter("tinyward_alerts", "Alerts by outcome (sent, deduplicated, "
                              "dropped: queue full, failed: a sink's try).", ["outcome"],
                              registry=self.registry)
        self.latency = Histogram("tinyward_ingest_seconds", "Seconds from a report request "
                                 "received to its acknowledgement sent.", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        # Children bound once: a labels() lookup per report costs more than the count.
        self._latency = {endpoint: self.latency.labels(endpoint)
                         for endpoint in ("report", "batch")}
        self._kinds: set[str] = set()
        self._lock = threading.Lock()
        self._device_states = device_states

    def stored(self, reports: int) -> None:
        if reports:
            self.reports.inc(reports)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason if reason in REFUSAL_REASONS else OTHER).inc()

    def incident(self, kind: str, count: int = 1) -> None:
        with self._lock:
            if kind not in self._kinds and len(self._kinds) < MAX_KINDS:
                self._kinds.add(kind)
            label = kind if kind in self._kinds else OTHER
        self.incidents.labels(label).inc(count)

    def acknowledged(self, endpoint: str, seconds: float) -> None:
        (self._latency.get(endpoint) or self.latency.labels(endpoint)).observe(seconds)

    def alert(self, outcome: str) -> None:
        self.alerts.labels(outcome).inc()

    def render(self) -> bytes:
        """The exposition text: this process's counters (or every worker's, summed, in
        multiprocess mode) and the devices by state."""
        if self._multi is not None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, str(self._multi))  # type: ignore[no-untyped-call]
        else:
            registry = self.registry
        text = generate_latest(registry)
        if self._device_states is None:
            return text
        # A registry per scrape for the gauge (two scrapes at once never share one).
        states = CollectorRegistry()
        states.register(_StatesCollector(self._device_states()))
        return text + generate_latest(states)


class _StatesCollector(Collector):
    def __init__(self, counts: Mapping[str, int]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("tinyward_devices", "Enrolled devices by state.",
                                  labels=["state"])
        for state, count in sorted(self._counts.items()):
            gauge.add_metric([state], count)
        yield gauge
