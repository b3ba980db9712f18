"""``tinyward bench watch``: what detection costs the device, and what it tells the uplink.

**Cost per packet** (one run, the same frames for every row): a network model is trained
(``detect.pipeline.train``, int8 Mahalanobis with novelty and per-class thresholds) on
synthetic benign telemetry; the test stream (benign telemetry with port sweeps) is then
replayed through, side by side,

* *parse only* — :func:`~tinyward.detect.pcap.decode_frame` (the baseline: what any
  capture costs),
* *parse + features* — plus the 24 features (``NetFeatureExtractor.update``),
* *watch, batch 1* / *watch, batch 64* — the core's full path
  (:class:`~tinyward.link.watch.NetScorer` feed + flush, :class:`Incidents`), scoring each
  packet alone (a quiet link) or 64 at a time (a busy one, as the capture thread reads).

CPU is this thread's CPU time (``time.thread_time``) per packet, median of ``repeats``.
Memory: the detector's state on a device (the C state struct of the float build, the
novelty set and class table; constants are flash), and in Python the bytes allocated
while scoring (tracemalloc peak per packet of a 64-packet batch) and the bytes kept per
packet after 20,000 packets (bounded state: about 0).

**The eavesdropper**: a provisioned device reports to the real fleet server through a
loopback proxy that records every TLS record (as ``bench shaping``). Its source's
incidents come from a real :class:`Incidents` fed by a replay thread that, in about half
of the shaper's intervals (seeded), pushes a port sweep through the real scorer (the CPU
work of a detection happens inside the device process, as it would) and otherwise
benign telemetry. The rate limit is lifted (every sweep is an incident: the most an
observer could hope for). The observer's features and classifier are
``bench shaping``'s (records per interval and the next, sizes, first-record time; random
forest, 5-fold CV x3); the label of an interval is "an incident was raised in it" (its
report carries it). Side by side, the same run with the naive design — an alert sent at
once (shaping off): what the constant-size report hides.
"""

from __future__ import annotations

import math
import os
import random
import secrets
import shutil
import signal
import statistics
import tempfile
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyward.bench.shaping import _auc, _features, _null_aucs
from tinyward.bench.watch_traffic import sweep_frames, telemetry_frames, write_pcap
from tinyward.detect.pcap import LINKTYPE_ETHERNET, ReadStats, decode_frame
from tinyward.detect.pipeline import Model, load_model, save_model, train
from tinyward.link.watch import IncidentLimits, Incidents, NetScorer

GOAL_AUC = 0.55


@dataclass(frozen=True)
class CostRow:
    name: str
    us_per_packet: float
    packets: int


@dataclass(frozen=True)
class CostResult:
    rows: tuple[CostRow, ...]
    arithmetic: str
    state_bytes: int  # on a device: C state (float build) + novelty set + class table
    model_bytes: int  # the detector's constant tables (flash)
    transient_bytes_per_packet: float  # Python, tracemalloc peak / packets of a batch
    retained_bytes_per_packet: float  # Python, growth per packet after warm-up
    alarms: int


@dataclass(frozen=True)
class EavesdropResult:
    intervals: int
    with_incidents: int
    incidents: int
    auc: float  # the design: incidents in the next constant-size report
    auc_null: tuple[float, ...]  # the same features, labels shuffled (chance here)
    auc_alert: float  # baseline: an alert report sent at once (shaping off)
    reports: int
    reports_alert: int
    upstream_sizes: tuple[int, ...]
    interval: float


def _model(folder: Path, seed: int) -> Model:
    rng = random.Random(seed)
    benign = write_pcap(folder / "benign.pcap", telemetry_frames(1_000_000.0, 3000, rng))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few calibration rows: the model says so itself
        model = train([benign], kind="mahalanobis-int8", novelty="pair", per_class=True)
    save_model(model, folder / "model.json")
    return load_model(folder / "model.json")


def _stream(seed: int, seconds: int) -> list[tuple[float, bytes]]:
    rng = random.Random(seed + 1)
    frames = telemetry_frames(2_000_000.0, seconds * 20, rng)
    for s in range(2, seconds, 5):  # a 100-port sweep every 5 s
        frames += sweep_frames(2_000_000.0 + s + 0.3, range(1, 101))
    frames.sort()
    return frames


def _cpu(run: Callable[[], int], repeats: int) -> tuple[float, int]:
    times = []
    n = 0
    for _ in range(repeats):
        start = time.thread_time()
        n = run()
        times.append((time.thread_time() - start) / max(1, n))
    return statistics.median(times) * 1e6, n


def cost(folder: Path, seed: int = 7, seconds: int = 60, repeats: int = 3) -> CostResult:
    """CPU and memory per packet (see module docstring); about 10-30 s."""
    model = _model(folder, seed)
    frames = _stream(seed, seconds)

    def parse() -> int:
        stats = ReadStats()
        return sum(decode_frame(ts, LINKTYPE_ETHERNET, f, stats=stats) is not None
                   for ts, f in frames)

    def features() -> int:
        extractor = model.features.extractor.copy()  # type: ignore[union-attr]
        stats = ReadStats()
        n = 0
        for ts, f in frames:
            packet = decode_frame(ts, LINKTYPE_ETHERNET, f, stats=stats)
            if packet is not None:
                extractor.update(packet)
                n += 1
        return n

    alarms = [0]

    def watch(batch: int) -> Callable[[], int]:
        def run() -> int:
            # warmup=0: the bench's stream is seconds long; every sweep must alarm
            scorer, incidents = NetScorer(model, warmup=0), Incidents()
            for i, (ts, f) in enumerate(frames):
                scorer.feed(f, ts)
                if (i + 1) % batch == 0:
                    for kind, t in scorer.flush():
                        incidents.alarm(kind, t)
            for kind, t in scorer.flush():
                incidents.alarm(kind, t)
            alarms[0] = scorer.stats.alarms
            return scorer.stats.packets
        return run

    rows = []
    for name, fn in (("parse only (baseline)", parse), ("parse + features", features),
                     ("watch, batch 1 (quiet link)", watch(1)),
                     ("watch, batch 64 (busy link)", watch(64))):
        us, n = _cpu(fn, repeats)
        rows.append(CostRow(name, us, n))
    transient, retained = _memory(model, frames)
    scorer = NetScorer(model)
    return CostResult(tuple(rows), scorer.arithmetic, scorer.state_bytes(),
                      int(model.detector.model_bytes()), transient, retained, alarms[0])


def _memory(model: Model, frames: list[tuple[float, bytes]]) -> tuple[float, float]:
    scorer = NetScorer(model)
    frames = frames[:20_000]
    warm_at = min(999, len(frames) // 4)  # allocations of the first packets are warm-up
    warm = 0
    tracemalloc.start()
    try:
        peaks = []
        for i, (ts, f) in enumerate(frames):
            if i % 64 == 0:
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
            scorer.feed(f, ts)
            if i % 64 == 63:
                scorer.flush()
                peaks.append((tracemalloc.get_traced_memory()[1] - base) / 64)
            if i == warm_at:
                warm = tracemalloc.get_traced_memory()[0]
        end = tracemalloc.get_traced_memory()[0]
        n = len(frames) - warm_at - 1
    finally:
        tracemalloc.stop()
    return statistics.median(peaks), (end - warm) / max(1, n)


# ---- the eavesdropper -----------------------------------------------------------------


class _WatchedSensor:
    """A results source with no results whose incidents are the watch's."""

    def __init__(self, incidents: Incidents) -> None:
        self._incidents = incidents
        self.alerts: list[float] = []  # alert mode: a result per incident, at once
        self.alert_mode = False
        self._lock = threading.Lock()

    def take(self, now: float) -> list[Mapping[str, Any]]:
        if not self.alert_mode:
            return []
        with self._lock:
            n, self.alerts = len(self.alerts), []
        return [{"event": "alert", "n": k} for k in range(n)]

    def next_time(self) -> float | None:
        return None

    def incidents(self) -> dict[str, int]:
        return self._incidents.totals()


class _Replay:
    """The detection work inside the device process: per interval, a sweep (about half
    of them, seeded) or benign telemetry, through the real scorer and incidents."""

    def __init__(self, model: Model, sensor: _WatchedSensor, incidents: Incidents,
                 start: float, interval: float, n: int, seed: int) -> None:
        self.scorer = NetScorer(model, warmup=0)  # the sweeps from the first interval on
        self._sensor, self._incidents = sensor, incidents
        self._start, self._interval, self._n = start, interval, n
        rng = random.Random(seed)
        self.attack = [rng.random() < 0.5 for _ in range(n + 2)]
        self.offsets = [rng.uniform(0.05, 0.75) * interval for _ in range(n + 2)]
        self.raised: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._port = 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        rng = random.Random(3)
        t_pkt = 3_000_000.0
        for k in range(self._n + 1):
            at = self._start + k * self._interval + self.offsets[k]
            if self._stop.wait(max(0.0, at - time.monotonic())):
                return
            t_pkt += self._interval
            frames = telemetry_frames(t_pkt, 2, rng)
            if self.attack[k]:
                # a fresh range each time: new ports are novel every time
                frames += sweep_frames(t_pkt + 0.01, range(self._port, self._port + 30))
                self._port = self._port + 30 if self._port < 60_000 else 1
            before = sum(self._incidents.totals().values())
            for ts, f in sorted(frames):
                self.scorer.feed(f, ts)
            for kind, ts in self.scorer.flush():
                self._incidents.alarm(kind, ts)
            if sum(self._incidents.totals().values()) > before:
                now = time.monotonic()
                self.raised.append(now)
                with self._sensor._lock:
                    self._sensor.alerts.append(now)


def eavesdrop(folder: Path, duration: float = 60.0, interval: float = 0.1, size: int = 1024,
              seed: int = 7) -> EavesdropResult:
    """The observer's AUC on incident intervals (see module docstring)."""
    from tinyward.fleet.pki import Fleet
    from tinyward.lab.fleetproc import start_fleet_server
    from tinyward.lab.proxy import TCPProxy
    from tinyward.link.client import LinkConfig
    from tinyward.link.runner import DeviceRunner, RunnerConfig
    from tinyward.link.shaper import ShaperConfig
    from tinyward.trust.device import Device

    model = _model(folder, seed)
    passphrase = secrets.token_urlsafe(16).encode()
    fleet = Fleet.init(folder / "fleet", passphrase)
    devices = []
    for name in ("watched", "alerting"):
        device = Device.init(folder / name)
        device.install(fleet.enroll(device.enrolment_request, passphrase))
        devices.append(device)
    server, url = start_fleet_server(fleet.directory, None,
                                     extra=("--rate", "1000", "--burst", "1000"))
    try:
        port = int(url.rsplit(":", 1)[1])
        n = int(duration / interval) - 1
        phases = []
        for device, alert in ((devices[0], False), (devices[1], True)):
            # Every detection an incident: the rate limit would only hide more.
            incidents = Incidents(IncidentLimits(k=1, window=1.0, burst=1e6, per_second=1e6))
            sensor = _WatchedSensor(incidents)
            sensor.alert_mode = alert
            proxy = TCPProxy(("127.0.0.1", port), record=True)
            runner = DeviceRunner(device, proxy.url, RunnerConfig(
                shaper=ShaperConfig(interval=interval, size=size),
                link=LinkConfig(backoff_initial=0.05, backoff_max=0.5),
                unsafe_unshaped=alert), sensor)
            runner.link.connect()
            start = time.monotonic()
            replay = _Replay(model, sensor, incidents, start, interval, n, seed)
            replay.start()
            try:
                runner.run(duration=duration)
            finally:
                replay.stop()
                proxy.close()
            labels = np.zeros(n, dtype=int)
            for t in replay.raised:
                k = math.floor((t - start) / interval)
                if 0 <= k < n:
                    labels[k] = 1
            phases.append((proxy, runner, start, labels, replay))
        (p0, r0, s0, labels, rep0), (p1, r1, s1, labels1, _) = phases
        x0 = _features(p0.records, s0, interval, n)
        x1 = _features(p1.records, s1, interval, n)
        up = sorted({r.length for r in p0.records if r.upstream and r.content_type == 23})
        return EavesdropResult(
            intervals=n, with_incidents=int(labels.sum()), incidents=len(rep0.raised),
            auc=_auc(x0, labels, seed), auc_null=tuple(_null_aucs(x0, labels, seed)),
            auc_alert=_auc(x1, labels1, seed), reports=r0.stats.generated,
            reports_alert=r1.stats.generated, upstream_sizes=tuple(up), interval=interval)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)


def run(duration: float = 60.0, interval: float = 0.1, seed: int = 7,
        folder: Path | None = None) -> tuple[CostResult, EavesdropResult]:
    base = Path(folder) if folder else Path(tempfile.mkdtemp(
        prefix="tinyward-watch-",
        dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))  # noqa: S108
    try:
        (base / "cost").mkdir(parents=True, exist_ok=True)
        (base / "eaves").mkdir(parents=True, exist_ok=True)
        return (cost(base / "cost", seed),
                eavesdrop(base / "eaves", duration, interval, seed=seed))
    finally:
        if folder is None:
            shutil.rmtree(base, ignore_errors=True)


__all__ = ["GOAL_AUC", "CostResult", "CostRow", "EavesdropResult", "cost", "eavesdrop", "run"]
