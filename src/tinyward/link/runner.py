"""Running a connected device: sensor → shaper → signed, numbered report → queue → link.

One loop in one thread, no listening socket anywhere:

1. at each tick of the shaper (constant rate), the results gathered since the previous tick
   become one report: a sequence number is reserved in protected storage, the report is
   signed by the device's report key and padded to the fixed size, and stored in the
   queue — all *before* any attempt to send it;
2. whenever reports are queued and the link is not backing off, the oldest is posted; the
   server's ``stored_seq`` frees everything it covers;
3. a failure (unreachable server, refused handshake, pin mismatch) keeps everything queued
   and backs off with jitter; ticks go on regardless, so the schedule on the wire never
   depends on what happened.

Stopping (SIGTERM, SIGINT, ``stop`` event, ``duration``) never loses a report: every report
is in protected storage before it is sent, and an in-flight post either got its
acknowledgement or is sent again next time (the server drops the duplicate).

The results come from a pluggable :class:`~tinyward.app.results.ResultSource`;
:class:`SimulatedSensor` is the built-in stand-in until the sandboxed application feeds the core.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tinyward._fsutil import atomic_write
from tinyward.app.results import ResultSource
from tinyward.errors import Misuse
from tinyward.link.chunks import IDLE_REQUEST, FetchChannel, FetchRequest, Frame
from tinyward.link.client import Backoff, LinkConfig, ReportLink, ServerURL, device_context
from tinyward.link.errors import (
    LinkError,
    PinMismatch,
    QueueDamaged,
    ReportRejected,
    ServerRefused,
    ServerUnreachable,
)
from tinyward.link.queue import QueueConfig, ReportQueue
from tinyward.link.shaper import Batch, Shaper, ShaperConfig
from tinyward.trust import report as codec
from tinyward.trust.instance import InstanceLock

log = logging.getLogger("tinyward.link")


class SimulatedSensor:
    """A stand-in sensor: events at random times (Poisson, ``rate`` per second), seeded.

    Each event is one result ``{"event": "motion", "score": s, "n": k}``.
    """

    def __init__(self, rate: float = 0.2, seed: int | None = None,
                 start: float | None = None) -> None:
        """``start``: monotonic time the sensor starts; by default the first :meth:`take`."""
        if not 0 <= rate <= 1000:
            raise ValueError("rate must be 0..1000 events per second")
        self._rate = rate
        self._rng = random.Random(seed)  # noqa: S311 - event timing, not a secret
        self._count = 0
        self._next: float | None = None if start is None else start + self._gap()
        self.times: list[float] = []  # event times, for the benchmark's ground truth

    def _gap(self) -> float:
        return self._rng.expovariate(self._rate) if self._rate > 0 else float("inf")

    def next_time(self) -> float | None:
        if self._next is None or self._next == float("inf"):
            return None
        return self._next

    def take(self, now: float) -> list[Mapping[str, Any]]:
        results: list[Mapping[str, Any]] = []
        if self._next is None:
            self._next = now + self._gap()
        while self._next <= now and len(results) < 10_000:
            self._count += 1
            self.times.append(self._next)
            results.append({"event": "motion", "score": round(self._rng.uniform(0.5, 1.0), 3),
                            "n": self._count})
            self._next += self._gap()
        return results


@dataclass(frozen=True)
class RunnerConfig:
    """Everything a device run can be told (safe defaults).

    ``drain`` bounds how long a run that reached its ``duration`` (or made ``reports``
    reports) keeps delivering its queue without making new reports. ``unsafe_unshaped``
    turns the constant rate off — one report per event, sent at once, no report when nothing
    happens — and exists only so that
    ``tinyward bench shaping`` can show what shaping hides. Never use it on a device.
    (Reports stay padded: the fleet refuses any other size.)
    """

    shaper: ShaperConfig = field(default_factory=ShaperConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    drain: float = 0.0
    reports: int | None = None
    unsafe_unshaped: bool = False
    #: A listening HTTPS status port (``link/debugport.py``): only the assessment lab's
    #: control (``device run --unsafe-debug-port N``, hidden). Never on a device.
    unsafe_debug_port: int | None = None


@dataclass
class RunStats:
    """What a run did (also written to the status file for people and the demo)."""

    device_id: str = ""
    generated: int = 0
    acknowledged_seq: int = 0
    queued: int = 0
    dropped_reports: int = 0
    dropped_results: int = 0
    delivered: int = 0
    failures: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    state: str = "starting"
    first_seq: int | None = None
    last_seq: int | None = None
    acked_seqs: list[int] = field(default_factory=list)
    update: dict[str, Any] | None = None  # the update client's status (the report's upd)
    watch: dict[str, Any] | None = None  # the core's detectors (link/watch*.py), not sent


#: One runner per device folder, and no air-gapped run beside it (trust/instance.py).
DeviceLock = InstanceLock


class DeviceRunner:
    """Runs one provisioned device against one fleet server (see module docstring)."""

    def __init__(
        self,
        device: Any,
        server: str,
        config: RunnerConfig | None = None,
        source: ResultSource | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        status_file: Path | None = None,
        record_acks: bool = False,
        fetch: FetchChannel | None = None,
        update_status: Callable[[], Mapping[str, Any]] | None = None,
        watch_status: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        """Raises NotProvisioned, KeystoreError, QueueDamaged, StorageError, Misuse.

        ``fetch``: the update fetcher's channel (update/fetcher.py); every report carries
        its request for one chunk (idle without it) and it gets the answer.
        ``update_status``: called at each tick for the report's ``upd`` field (the update
        agent's ``{"state", "ver", "why", "tgt"}``, see docs/reports.md), also kept in
        ``RunStats.update``; None: no field.
        ``watch_status``: the on-device detectors' counters, kept in ``RunStats.watch`` and
        the status file (never in a report: reports carry only incident counts).
        """
        self.config = config or RunnerConfig()
        self._device = device
        self._device_id: str = device.device_id
        self._signer = device.signer("report")
        self._clock, self._wall = clock, wall_clock
        self.source: ResultSource = source or SimulatedSensor()
        context, pin = device_context(device)
        self.link = ReportLink(ServerURL.parse(server), context, pin, self.config.link)
        self.queue = ReportQueue(device.storage, self.config.queue)
        self._backoff = Backoff(self.config.link.backoff_initial, self.config.link.backoff_max,
                                rng)
        self._status_file = status_file
        self._told_incidents: dict[str, int] = {}
        self._send_delay = min(0.2 * self.config.shaper.interval, 0.5)
        self._record_acks = record_acks
        self._fetch = fetch
        self._update_status = update_status
        self._watch_status = watch_status
        self.stats = RunStats(device_id=self._device_id, acknowledged_seq=self.queue.acked,
                              queued=len(self.queue), dropped_reports=self.queue.dropped)

    # ---- making reports ----------------------------------------------------------------

    def _report(self, results: tuple[Mapping[str, Any], ...], dropped_results: int) -> None:
        reservation = self.queue.reserve()  # committed before the number is used
        incidents = {**self._source_incidents(),
                     "dropped_reports": reservation.dropped_reports,
                     "dropped_results": dropped_results}
        healthy = bool(getattr(self.source, "healthy", True))
        update = self._update()
        report = codec.Report(
            device_id=self._device_id, seq=reservation.seq, timestamp=int(self._wall()),
            results=results, incidents=incidents,
            health="degraded" if reservation.dropped_reports or dropped_results or not healthy
            else "ok", update=update)
        try:
            data = codec.encode_report(report, self._signer, self.config.shaper.size)
        except codec.ReportTooLarge:
            # Results bigger than the report: send the report without them, counted.
            self.stats.dropped_results += len(results)  # told in this very report
            report = codec.Report(self._device_id, reservation.seq, report.timestamp,
                                  incidents={**incidents,
                                             "dropped_results": dropped_results + len(results)},
                                  health="degraded", update=update)
            data = codec.encode_report(report, self._signer, self.config.shaper.size)
        self.queue.put(reservation.seq, data, reservation.dropped_reports)
        self.stats.generated += 1
        self.stats.first_seq = self.stats.first_seq or reservation.seq
        self.stats.last_seq = reservation.seq

    def _update(self) -> codec.UpdateStatus | None:
        """The update agent's status for this report (also kept in ``RunStats.update``); a
        status the schema refuses is left out (and logged) rather than stopping the
        reports: the ``upd`` field is at most 219 bytes, so it always fits beside the fixed
        part of a report."""
        if self._update_status is None:
            return None
        status = dict(self._update_status())
        self.stats.update = status
        try:
            return codec.UpdateStatus.from_mapping(status)
        except Misuse as error:
            log.warning("update status left out of the report: %s", error)
            return None

    def _source_incidents(self) -> dict[str, int]:
        """What the source counts (e.g. a misbehaving application), as deltas since the
        previous report; the source keeps running totals."""
        counter = getattr(self.source, "incidents", None)
        if not callable(counter):
            return {}
        totals = dict(counter())
        deltas = {kind: n - self._told_incidents.get(kind, 0) for kind, n in totals.items()}
        self._told_incidents = totals
        return {kind: n for kind, n in deltas.items() if n > 0}

    def tick(self, batch: Batch) -> None:
        """Turn one shaper batch into a queued report."""
        self.stats.dropped_results += batch.dropped_results
        self._report(batch.results, batch.dropped_results)

    # ---- delivering --------------------------------------------------------------------

    def deliver(self, deadline: float) -> None:
        """Send queued reports, oldest first, until the queue is empty, a failure, or
        ``deadline`` (monotonic). A failure sets the backoff; nothing leaves the queue
        without an acknowledgement (or a counted refusal)."""
        while len(self.queue) and self._clock() < deadline:
            head = self.queue.oldest()
            if head is None:  # len() said otherwise: a queue bug
                raise Misuse("the report queue has a length but no oldest entry")
            seq, data = head
            # One chunk request per report, idle or not: the same size on the wire.
            request = self._fetch.request() if self._fetch is not None else IDLE_REQUEST
            try:
                stored, frame = self.link.exchange(data, request)
            except ReportRejected as error:
                log.warning("report %d refused by the server and dropped: %s", seq, error)
                self._fetched(request, None)
                self.queue.drop_oldest()
                self._note_refusal(error)
                continue
            except (PinMismatch, ServerRefused, ServerUnreachable, LinkError) as error:
                self._fetched(request, None)
                self._note_refusal(error)
                self.stats.failures += 1
                self._retry_at = self._clock() + self._backoff.next_delay()
                return
            self._fetched(request, frame)
            before = self.queue.acked
            try:
                self.queue.acknowledge(stored)
            except QueueDamaged as error:
                # The server claims numbers this device never used: keep everything, say
                # so, and do not hammer it.
                self._note_refusal(error)
                self.stats.failures += 1
                self._retry_at = self._clock() + self._backoff.next_delay()
                return
            self._backoff.reset()
            self.stats.last_error = None
            if self._record_acks:
                self.stats.acked_seqs.extend(
                    s for s in range(before + 1, self.queue.acked + 1)
                    if self.stats.first_seq is not None and s >= self.stats.first_seq)
            self.stats.delivered += 1
            if stored < seq:
                # The server holds less than we sent and did not complain: a server that
                # lost its data. Do not spin on it.
                self._retry_at = self._clock() + self._backoff.next_delay()
                return

    def _fetched(self, request: FetchRequest, frame: Frame | None) -> None:
        if self._fetch is not None:
            self._fetch.answer(request, frame)

    def _note_refusal(self, error: Exception) -> None:
        kind = type(error).__name__
        self.stats.refusals[kind] = self.stats.refusals.get(kind, 0) + 1
        if str(error) != self.stats.last_error:
            log.warning("%s", error)
        self.stats.last_error = str(error)

    # ---- the loop ----------------------------------------------------------------------

    def _write_status(self) -> None:
        self.stats.acknowledged_seq = self.queue.acked
        self.stats.queued = len(self.queue)
        self.stats.dropped_reports = self.queue.dropped
        if self._watch_status is not None:
            self.stats.watch = dict(self._watch_status())
        if self._status_file is not None:
            status = asdict(self.stats)
            status.pop("acked_seqs")
            atomic_write(self._status_file, json.dumps(status).encode(), mode=0o644)

    def run(self, stop: threading.Event | None = None, duration: float | None = None) -> RunStats:
        """Run until ``stop`` is set or ``duration`` seconds have passed (then drain).

        Raises DeviceBusy if another runner holds the device; StorageError if protected
        storage fails (a report is never sent that was not stored first).
        """
        stop = stop or threading.Event()
        with DeviceLock(self._device.directory):
            debug = None
            if self.config.unsafe_debug_port is not None:
                from tinyward.link.debugport import DebugPort

                debug = DebugPort(self.config.unsafe_debug_port, lambda: {
                    k: v for k, v in asdict(self.stats).items() if k != "acked_seqs"})
            try:
                return self._loop(stop, duration)
            finally:
                if debug is not None:
                    debug.close()
                self.link.close()
                self.stats.state = "stopped"
                self._write_status()

    def _loop(self, stop: threading.Event, duration: float | None) -> RunStats:
        start = self._clock()
        shaper = Shaper(self.config.shaper, start)
        end = start + duration if duration is not None else float("inf")
        self._retry_at = start
        self.stats.state = "running"
        next_status = start
        while not stop.is_set():
            now = self._clock()
            if (self.config.reports is not None and self.stats.generated >= self.config.reports
                    and now < end):
                end = now  # made all it was asked to: start draining
            producing = now < end
            if not producing and (not len(self.queue) or now >= end + self.config.drain):
                break
            if producing and self.config.unsafe_unshaped:
                results = self.source.take(now)
                for result in results:
                    self._report((result,), 0)
            elif producing:
                for result in self.source.take(now):
                    shaper.add_result(result)
                batch = shaper.poll(now)
                if batch is not None:
                    self.tick(batch)
                    # Send at a fixed offset after the slot, not when the report happens to
                    # be ready: how long signing and storing took (which depends a little
                    # on the content) must not show in the timing on the wire.
                    self._retry_at = max(self._retry_at, batch.slot + self._send_delay)
            if len(self.queue) and now >= self._retry_at:
                # Deliver until the next tick is due, so sending never delays a tick.
                tick = now + self.config.shaper.interval if self.config.unsafe_unshaped \
                    else shaper.next_due()
                self.deliver(min(tick, end + self.config.drain) if producing
                             else end + self.config.drain)
            if now >= next_status:
                self._write_status()
                next_status = now + 1.0
            if not producing and not len(self.queue):
                break  # drained
            wake = [end if producing else end + self.config.drain]
            if producing:
                wake.append(shaper.next_due())
                if self.config.unsafe_unshaped:
                    nxt = self.source.next_time()
                    if nxt is not None:
                        wake.append(nxt)
            if len(self.queue):
                wake.append(self._retry_at)
            stop.wait(max(0.0, min(wake) - self._clock()))
        self.stats.state = "stopping"
        return self.stats


__all__ = ["DeviceLock", "DeviceRunner", "ResultSource", "RunStats", "RunnerConfig",
           "SimulatedSensor"]
