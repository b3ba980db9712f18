"""``tinyward bench shaping``: can an eavesdropper tell when something happened?

Two provisioned devices report to the real fleet server (``tinyward fleet serve``) at the
same time, each through its own loopback TCP proxy that records every TLS record passing
(time, direction, size) — exactly what a passive observer on the path sees. Both see the
*same* random events (one seeded Poisson process, about half of the intervals hold one or
more). One device shapes (constant rate, constant size); the other runs with shaping off
(``unsafe_unshaped``: a report as soon as an event happens, sized to its content).

The observer's task: for each interval of the shaper's grid, say whether an event happened
in it. Features per interval, for that interval and the next one: number and bytes of
upstream and downstream records, the largest upstream record, and the time of the first
upstream record within the interval. A random forest, scored by ROC AUC under stratified
5-fold cross-validation, averaged over three splits (fixed seeds). 0.5 means the observer
learns nothing; the same classifier on shuffled labels shows how far from 0.5 chance alone
goes on this many intervals.

With ``hostile=True`` (the default), two more phases run a hostile sandboxed application
(``_latency_app``, issue 12 item 2) as the shaped device's source: it returns no result and,
in time slots whose secret bit is 1, takes 60 % of its frame period per frame (half spinning
on the CPU, half asleep: within its deadline and its CPU budget). Once as a device runs it
(the app on its own frame clock), once with ``unsafe_inline_feed`` (frames fed on the report loop,
as before the fix). The same
observer tries to tell the 1-slots from the 0-slots: ROC AUC, and how many of the secret
bits it recovers (a slot's mean score above the median says 1; chance is half).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyward.fleet.pki import Fleet
from tinyward.lab.fleetproc import start_fleet_server
from tinyward.lab.proxy import RecordSeen, TCPProxy
from tinyward.link.client import LinkConfig
from tinyward.link.runner import DeviceRunner, RunnerConfig, SimulatedSensor
from tinyward.link.shaper import TLS13_RECORD_OVERHEAD, ShaperConfig
from tinyward.trust.device import Device

APPLICATION_DATA = 23


@dataclass(frozen=True)
class HostileResult:
    """The latency-modulating app against the observer, in one feeding mode."""

    mode: str  # "own thread" or "inline (unsafe)"
    auc: float
    bits_right: int
    bits: int
    reports: int
    incidents: dict[str, int]
    frames_fed: int


@dataclass(frozen=True)
class ShapingResult:
    intervals: int
    with_events: int
    events: int
    auc_shaped: float
    auc_unshaped: float
    auc_null: tuple[float, ...]  # shaped features, shuffled labels (chance on this data)
    shaped_bytes_per_hour: float  # measured at the bench's interval
    unshaped_bytes_per_hour: float
    bytes_per_report: float  # shaped: TLS bytes both ways per report (measured)
    request_head_bytes: int  # HTTP request head inside the upstream record
    upstream_record_sizes: tuple[int, ...]  # distinct sizes of the shaped device's records
    interval: float
    size: int
    reports_shaped: int
    reports_unshaped: int
    hostile: tuple[HostileResult, ...] = ()

    def bytes_per_hour_at(self, interval: float) -> float:
        """The shaped device's cost at another interval (measured bytes per report)."""
        return self.bytes_per_report * 3600.0 / interval


def _features(records: list[RecordSeen], start: float, interval: float, n: int
              ) -> np.ndarray:
    per = np.zeros((n + 1, 6))
    per[:, 5] = -1.0
    for rec in records:
        if rec.content_type != APPLICATION_DATA:
            continue
        k = math.floor((rec.time - start) / interval)
        if not 0 <= k <= n:
            continue
        if rec.upstream:
            per[k, 0] += 1
            per[k, 1] += rec.length
            per[k, 4] = max(per[k, 4], rec.length)
            if per[k, 5] < 0:
                per[k, 5] = rec.time - (start + k * interval)
        else:
            per[k, 2] += 1
            per[k, 3] += rec.length
    return np.hstack([per[:n], per[1:n + 1]])


def _auc(features: np.ndarray, labels: np.ndarray, seed: int, repeats: int = 3) -> float:
    """Mean cross-validated ROC AUC of a random forest over ``repeats`` different 5-fold
    splits (one split alone swings by several hundredths on a few hundred intervals)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    aucs = []
    for repeat in range(repeats):
        model = RandomForestClassifier(n_estimators=100, min_samples_leaf=3,
                                       random_state=seed + repeat, n_jobs=1)
        folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed + repeat)
        scores = cross_val_predict(model, features, labels, cv=folds,
                                   method="predict_proba")[:, 1]
        aucs.append(roc_auc_score(labels, scores))
    return float(np.mean(aucs))


def _null_aucs(features: np.ndarray, labels: np.ndarray, seed: int, n: int = 3) -> list[float]:
    """The same classifier on shuffled labels: what "learns nothing" looks like here."""
    rng = np.random.default_rng(seed)
    return [_auc(features, rng.permutation(labels), seed, repeats=1) for _ in range(n)]


def _hostile_phase(device: Device, port: int, shaper: ShaperConfig, link: LinkConfig,
                   duration: float, interval: float, seed: int, inline: bool,
                   keep: dict[str, object] | None = None, host: str = "127.0.0.1"
                   ) -> HostileResult:
    # ``keep``: gets the observer's features and labels (the assessment's traffic-analysis
    # probe computes their chance range).
    from tinyward.app.frames import simulated_frames
    from tinyward.app.manifest import load_manifest
    from tinyward.app.source import AppResultSource

    slot = 3 * interval
    rng = np.random.default_rng(seed)
    nbits = int(duration / slot) + 2
    bits = "".join("1" if b else "0" for b in rng.permutation(np.arange(nbits) % 2))
    # The app folder must be readable by the sandbox's uid (nobody when run as root).
    outer = Path(tempfile.mkdtemp(prefix="tinyward-hostile-", dir="/tmp"))
    try:
        outer.chmod(0o755)
        folder = outer / "app"
        shutil.copytree(Path(__file__).parent / "_latency_app", folder)
        manifest_path = folder / "sensor.toml"
        (folder / "target.json").write_text("{}")  # the manifest names it: it must exist
        period = 60.0 / load_manifest(manifest_path).input.frames_per_minute
        (folder / "target.json").write_text(
            json.dumps({"bits": bits, "slot": slot, "busy": 0.6 * period}))
        for path in [folder, *folder.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        manifest = load_manifest(manifest_path)
        source = AppResultSource.start(manifest, simulated_frames(manifest, seed),
                                       unsafe_inline_feed=inline)
        proxy = TCPProxy((host, port), record=True)
        try:
            runner = DeviceRunner(device, proxy.url, RunnerConfig(shaper=shaper, link=link),
                                  source)
            runner.link.connect()
            start = time.monotonic()
            runner.run(duration=duration)
        finally:
            proxy.close()
            incidents = source.local_incidents()
            frames_fed = source.frames_fed
            source.close()
    finally:
        shutil.rmtree(outer, ignore_errors=True)
    n = int(duration / interval) - 1
    # An interval's label: the secret bit in force at its tick (when inline frames are fed).
    labels = np.array([int(bits[math.floor((start + k * interval + 0.01) / slot) % nbits])
                       for k in range(n)])
    features = _features(proxy.records, start, interval, n)
    if keep is not None:
        keep.update(features=features, labels=labels)
    auc = _auc(features, labels, seed)
    scores = _scores(features, labels, seed)
    slots = np.array([math.floor((start + k * interval + 0.01) / slot) for k in range(n)])
    per_slot = {s: float(np.mean(scores[slots == s])) for s in np.unique(slots)}
    cut = float(np.median(list(per_slot.values())))
    right = sum((per_slot[s] > cut) == (bits[s % nbits] == "1") for s in per_slot)
    return HostileResult("inline (unsafe)" if inline else "own thread", auc, int(right),
                         len(per_slot), runner.stats.generated, incidents, frames_fed)


def _scores(features: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Cross-validated P(label 1) per interval (one split): the observer's guesses."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    model = RandomForestClassifier(n_estimators=100, min_samples_leaf=3, random_state=seed,
                                   n_jobs=1)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    return np.asarray(cross_val_predict(model, features, labels, cv=folds,
                                        method="predict_proba")[:, 1])


def run(duration: float = 60.0, interval: float = 0.1, size: int = 1024, seed: int = 7,
        folder: Path | None = None, hostile: bool = True) -> ShapingResult:
    """Run the benchmark (about ``duration`` + 10 seconds). See the module docstring."""
    base = Path(folder) if folder else Path(tempfile.mkdtemp(
        # A private mkdtemp in RAM: disk latency must not shape the figures.
        prefix="tinyward-shaping-",
        dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))  # noqa: S108
    passphrase = secrets.token_urlsafe(16).encode()
    server = None
    try:
        fleet = Fleet.init(base / "fleet", passphrase)  # server key in clear, 0600
        devices = []
        for name in ("shaped", "unshaped", "hostile", "hostile-inline"):
            device = Device.init(base / name)
            device.install(fleet.enroll(device.enrolment_request, passphrase))
            devices.append(device)
        server, url = start_fleet_server(fleet.directory, None,
                                         extra=("--rate", "1000", "--burst", "1000"))
        port = int(url.rsplit(":", 1)[1])
        # ln 2 / interval events per second: about half of the intervals hold an event.
        rate = math.log(2) / interval
        shaper = ShaperConfig(interval=interval, size=size)
        link = LinkConfig(backoff_initial=0.05, backoff_max=0.5)
        phases = []
        # One phase after the other, on the same event schedule (same seed, same offsets):
        # run side by side, the unshaped twin's bursts of work at event times would disturb
        # the shaped device's timing through the shared CPU, which no real device has.
        for device, unshaped in ((devices[0], False), (devices[1], True)):
            proxy = TCPProxy(("127.0.0.1", port), record=True)
            runner = DeviceRunner(device, proxy.url,
                                  RunnerConfig(shaper=shaper, link=link,
                                               unsafe_unshaped=unshaped),
                                  SimulatedSensor(rate, seed))
            runner.link.connect()  # connected before the grid starts, as a running device is
            start = time.monotonic()
            runner.source = SimulatedSensor(rate, seed, start=start)
            runner.run(duration=duration)
            proxy.close()
            phases.append((proxy, runner, start))
        proxies = [p for p, _, _ in phases]
        runners = [r for _, r, _ in phases]
        sensors = [r.source for r in runners]
        n = int(duration / interval) - 1
        events = [t - phases[0][2] for t in sensors[0].times]  # type: ignore[attr-defined]
        labels = np.zeros(n, dtype=int)
        for t in events:
            k = math.floor(t / interval)
            if 0 <= k < n:
                labels[k] = 1
        x_shaped, x_unshaped = (_features(p.records, start, interval, n)
                                for p, _, start in phases)
        up = sorted({r.length for r in proxies[0].records
                     if r.upstream and r.content_type == APPLICATION_DATA})
        elapsed = duration
        total = [sum(r.length for r in p.records) for p in proxies]
        reports = runners[0].stats.generated
        # http.client writes the request head and the body separately: two records.
        from collections import Counter
        heads = Counter(r.length for r in proxies[0].records if r.upstream
                        and r.content_type == APPLICATION_DATA
                        and r.length != size + TLS13_RECORD_OVERHEAD)
        head = heads.most_common(1)[0][0] - TLS13_RECORD_OVERHEAD if heads else 0
        hostile_results = tuple(
            _hostile_phase(device, port, shaper, link, duration, interval, seed, inline)
            for device, inline in ((devices[2], False), (devices[3], True))) if hostile else ()
        return ShapingResult(
            intervals=n, with_events=int(labels.sum()), events=len(events),
            auc_shaped=_auc(x_shaped, labels, seed), auc_unshaped=_auc(x_unshaped, labels, seed),
            auc_null=tuple(_null_aucs(x_shaped, labels, seed)),
            shaped_bytes_per_hour=total[0] * 3600.0 / elapsed,
            unshaped_bytes_per_hour=total[1] * 3600.0 / elapsed,
            bytes_per_report=total[0] / max(1, reports), request_head_bytes=head,
            upstream_record_sizes=tuple(up), interval=interval, size=size,
            reports_shaped=reports, reports_unshaped=runners[1].stats.generated,
            hostile=hostile_results)
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)
        if folder is None:
            shutil.rmtree(base, ignore_errors=True)


__all__ = ["HostileResult", "ShapingResult", "run"]
