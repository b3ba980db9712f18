"""``tinyward bench update``: can an eavesdropper tell that a device is downloading an update?

One provisioned device reports to the real fleet server (``tinyward fleet serve``, its own
process) through a loopback proxy that records every TLS record (time, direction, size):
what a passive observer on the path sees. The fleet's TUF repository holds a few targets
(``tinyward.lab.tufrepo``); at random times the device takes one up and its stock TUF
updater fetches it, one chunk per report, over the report link (tinyward.update.fetcher);
in between it is idle. Every interval of the report grid is labelled by whether its report
carried a chunk request (ground truth from the device itself).

The observer is :mod:`tinyward.bench.shaping`'s: per interval and the next one, number and
bytes of records each way, the largest upstream record, the first upstream record's time
in the interval, plus the server's answer time (last upstream record to the first
downstream one: does a chunk take longer to serve than filler?); a random forest scored by
cross-validated ROC AUC (three splits), and the same on shuffled labels for the chance
level. The observed targets are small (16 KiB by default), so that a run holds a dozen
downloads: with two long ones, any slow drift over the run (machine load) passes for a
signal that shuffled labels do not show.

A control phase (on by default) repeats the download with the frames' padding switched off
(``unsafe_unpadded`` on both ends, a server in this process): the same observer then sees
the download at once.

Delivery time: each download is timed from the offer to the verified file, and one more
download of ``timed_size`` (100 KiB) after the observed run, next to the formula
``(ceil(length / chunk) + metadata chunks) * interval``
(:func:`tinyward.link.chunks.delivery_seconds`).
"""

from __future__ import annotations

import math
import os
import random
import secrets
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyward.bench.shaping import APPLICATION_DATA, _auc, _features, _null_aucs
from tinyward.fleet.delivery import ChunkServer, DeliveryConfig, repository_dir
from tinyward.fleet.pki import Fleet
from tinyward.lab.fleetproc import start_fleet_server
from tinyward.lab.proxy import RecordSeen, TCPProxy
from tinyward.lab.tufrepo import PRODUCT, TufRepo
from tinyward.link import chunks
from tinyward.link.client import LinkConfig
from tinyward.link.runner import DeviceRunner, RunnerConfig, SimulatedSensor
from tinyward.link.shaper import ShaperConfig
from tinyward.trust.device import Device
from tinyward.update.client import UpdateClient
from tinyward.update.meta import Offer, Version


class LoggingChannel:
    """Wraps the update client's channel: when each report carried a chunk request."""

    def __init__(self, inner: chunks.FetchChannel) -> None:
        self.inner = inner
        self.sent: list[tuple[float, bool]] = []  # (monotonic time, idle)

    def request(self) -> chunks.FetchRequest:
        request = self.inner.request()
        self.sent.append((time.monotonic(), request.idle))
        return request

    def answer(self, request: chunks.FetchRequest, frame: chunks.Frame | None) -> None:
        self.inner.answer(request, frame)


@dataclass(frozen=True)
class Phase:
    """One recorded run: the observer's figures and what the device did."""

    intervals: int
    with_update: int
    auc: float
    auc_null: tuple[float, ...]
    downloads: tuple[float, ...]  # seconds from offer to verified file, each download
    up_sizes_idle: tuple[int, ...]
    up_sizes_update: tuple[int, ...]
    down_sizes_idle: tuple[int, ...]
    down_sizes_update: tuple[int, ...]
    bytes_per_report: float
    features: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)


@dataclass(frozen=True)
class UpdateBenchResult:
    interval: float
    chunk_size: int
    target_size: int
    padded: Phase
    unpadded: Phase | None
    timed_size: int = 0
    timed: tuple[float, ...] = ()  # seconds, offer to verified file, of timed_size

    def formula_seconds(self, length: int, interval: float | None = None) -> float:
        return chunks.delivery_seconds(length, interval or self.interval, self.chunk_size)


def _phase(device: Device, repo: TufRepo, url: str, duration: float, interval: float,
           target_size: int, seed: int, tag: str, unpadded: bool = False,
           timing_only: bool = False) -> Phase:
    """Downloads at random times for ``duration`` seconds, observed; or, ``timing_only``,
    one download at once, timed (the run ends with it; ``duration`` bounds it)."""
    versions = iter(range(1, 10_000))
    timings: list[float] = []
    client = UpdateClient(device_id=device.device_id, trusted_root=repo.root_bytes,
                          product_class=PRODUCT, workdir=Path(device.directory) / "update",
                          on_verified=lambda *args: None)
    channel = LoggingChannel(client.channel)
    port = int(url.rsplit(":", 1)[1])
    proxy = TCPProxy(("127.0.0.1", port), record=True)
    link = LinkConfig(backoff_initial=0.05, backoff_max=0.5, unsafe_unpadded_frames=unpadded)
    runner = DeviceRunner(device, proxy.url,
                          RunnerConfig(shaper=ShaperConfig(interval=interval), link=link),
                          SimulatedSensor(rate=0.0), fetch=channel,
                          update_status=client.status)
    rng = random.Random(seed)
    stop, done = threading.Event(), threading.Event()
    # Targets published before the run: nothing changes in the repository while it runs.
    paths = []
    cycle = 2 * (target_size / 1024 + 6) * interval
    for _ in range(1 if timing_only else int(duration / cycle) + 3):
        version = f"{tag}.0.{next(versions)}"
        data = rng.randbytes(target_size)
        paths.append((repo.add_target("model", version, data, name=f"model-{version}.bin"),
                      version))
    repo.publish()

    def controller() -> None:
        for path, version in paths:
            # Quiet for about as long as a download takes, then one download.
            quiet = 2 * interval if timing_only else rng.uniform(0.25, 0.75) * cycle
            if stop.wait(quiet):
                return
            began = time.monotonic()
            client.offer(Offer("model", path, Version.parse(version)))
            client.join(600.0)  # no polling: a busy bench thread would disturb the timing
            if client.status()["state"] == "staged" and not stop.is_set():
                timings.append(time.monotonic() - began)
            if timing_only:
                done.set()
                return

    runner.link.connect()  # connected before the grid starts, as a running device is
    time.sleep(2 * interval)
    start = time.monotonic()
    thread = threading.Thread(target=controller, daemon=True)
    thread.start()
    try:
        runner.run(done, duration=duration)
    finally:
        stop.set()
        thread.join(10)
        client.close()
        proxy.close()
    if timing_only:
        return Phase(0, 0, math.nan, (), tuple(timings), (), (), (), (), 0.0)
    n = int(duration / interval) - 1
    labels = np.zeros(n, dtype=int)
    for when, idle in channel.sent:
        k = math.floor((when - start) / interval)
        if 0 <= k < n and not idle:
            labels[k] = 1
    records = [r for r in proxy.records if r.time >= start and r.content_type == APPLICATION_DATA]
    features = np.hstack([_features(records, start, interval, n),
                          _latencies(records, start, interval, n)])

    def sizes(upstream: bool, label: int) -> tuple[int, ...]:
        return tuple(sorted({r.length for r in records if r.upstream == upstream
                             and 0 <= (k := math.floor((r.time - start) / interval)) < n
                             and labels[k] == label}))

    total = sum(r.length for r in records)
    return Phase(n, int(labels.sum()), _auc(features, labels, seed),
                 tuple(_null_aucs(features, labels, seed)), tuple(timings),
                 sizes(True, 0), sizes(True, 1), sizes(False, 0), sizes(False, 1),
                 total / max(1, runner.stats.delivered), features, labels)


def _latencies(records: list[RecordSeen], start: float, interval: float, n: int
               ) -> np.ndarray:
    """Per interval (and the next): the server's answer time, from the last upstream
    record to the first downstream record after it (-1 if none): does serving a chunk
    take the server longer than serving filler?"""
    per = np.full(n + 1, -1.0)
    last_up: float | None = None
    for rec in records:
        if rec.upstream:
            last_up = rec.time
            continue
        k = math.floor((rec.time - start) / interval)
        if last_up is not None and 0 <= k <= n and per[k] < 0:
            per[k] = rec.time - last_up
        last_up = None
    return np.column_stack([per[:n], per[1:n + 1]])


def run(duration: float = 45.0, interval: float = 0.1, target_size: int = 16 * 1024,
        seed: int = 7, control: bool = True, folder: Path | None = None,
        timed_size: int = 100 * 1024) -> UpdateBenchResult:
    """Run the benchmark (about ``duration`` × 1.3 + 30 s with the control).

    ``target_size``: the targets downloaded during the observed run (small: many downloads,
    so that slow drift over the run cannot pass for a signal); ``timed_size``: one more
    download afterwards, timed (0: none)."""
    base = Path(folder) if folder else Path(tempfile.mkdtemp(
        prefix="tinyward-bench-update-",
        dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))  # noqa: S108
    passphrase = secrets.token_urlsafe(16).encode()
    server = None
    try:
        fleet = Fleet.init(base / "fleet", passphrase)
        repo = TufRepo(repository_dir(fleet.directory))
        devices = []
        for name in ("padded", "unpadded"):
            device = Device.init(base / name)
            device.install(fleet.enroll(device.enrolment_request, passphrase))
            devices.append(device)
        server, url = start_fleet_server(fleet.directory, None,
                                         extra=("--rate", "1000", "--burst", "1000"))
        padded = _phase(devices[0], repo, url, duration, interval, target_size, seed, "1")
        timed: tuple[float, ...] = ()
        if timed_size:
            timed = _phase(devices[0], repo, url, 10 * chunks.delivery_seconds(
                timed_size, interval) + 30, interval, timed_size, seed, "3",
                timing_only=True).downloads
        unpadded = None
        if control:
            unpadded = _control(fleet, devices[1], repo, duration / 4, interval, target_size,
                                seed)
        return UpdateBenchResult(interval, chunks.DEFAULT_CHUNK_SIZE, target_size, padded,
                                 unpadded, timed_size, timed)
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)
        if folder is None:
            shutil.rmtree(base, ignore_errors=True)


def _control(fleet: Fleet, device: Device, repo: TufRepo, duration: float, interval: float,
             target_size: int, seed: int) -> Phase:
    """The same with the padding off, against a server in this process."""
    from tinyward.fleet.directory import FleetDirectory
    from tinyward.fleet.runner import ServerThread, server_ssl_context
    from tinyward.fleet.server import FleetServer, ServerConfig
    from tinyward.fleet.store import SQLiteStore

    store = SQLiteStore(Path(fleet.directory).parent / "control.db")
    delivery = ChunkServer(repo.dir, DeliveryConfig(unsafe_unpadded=True))
    thread = ServerThread(FleetServer(FleetDirectory(fleet), store,
                                      ServerConfig(rate_per_second=1000, burst=1000),
                                      delivery=delivery), server_ssl_context(fleet))
    try:
        return _phase(device, repo, f"https://127.0.0.1:{thread.port}", duration, interval,
                      target_size, seed, "2", unpadded=True)
    finally:
        thread.stop()
        store.close()


__all__ = ["LoggingChannel", "Phase", "UpdateBenchResult", "run"]
