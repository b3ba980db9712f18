"""Detection on the device, sans I/O: packets and sensor frames in, incident counts out.

The trusted core watches its own network interface (:mod:`tinyward.link.watch_capture`
holds the capture socket) and the frames it hands the sandboxed application. This module
is the logic between the two and the report:

* :class:`NetScorer` turns one link-layer frame into a :class:`~tinyward.detect.pcap.Packet`
  (the capture reader's own decoder), its 24 features (continuing the trained feature
  state) and a verdict from the trained model: with an int8 model the score is the
  integer reference that the C export matches bit for bit; with a float model it is the
  Python model (:attr:`NetScorer.arithmetic` says which).
* :class:`SensorScorer` scores the application's input frames with a trained sensor
  model (window features, a fresh stream, as ``detect score`` does for a CSV).
* Per-packet and per-window alarms become incidents through two gates per kind: an
  :class:`AlarmGate` (``k`` alarms within ``window`` seconds make one candidate, so one
  odd packet is not an incident) and a :class:`TokenBucket` (``burst`` at once, then
  ``per_second``): :class:`Incidents` keeps the running totals the device runner folds
  into the next report as deltas (``link/runner.py`` ``_source_incidents``). Incidents
  only change counts inside the constant-size report, never when or how much is sent.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyward.detect import netfeatures as nf
from tinyward.detect.fusion import packet_classes
from tinyward.detect.pcap import LINKTYPE_ETHERNET, Packet, ReadStats, decode_frame
from tinyward.detect.pipeline import Model, PacketFeatures, SensorFeatures
from tinyward.errors import BadInput, Misuse

#: The incident kinds a watching device reports (the fleet treats kinds as opaque).
#: ``net.anomaly``: packets the network detector scores above its threshold (its
#: class's, with per-class thresholds); ``net.novel``: packets of a peer/service tuple
#: never seen in training (models with a novelty set); ``sensor.tamper``: the
#: application's input frames scored above the sensor model's threshold.
INCIDENT_KINDS = ("net.anomaly", "net.novel", "sensor.tamper")


class WatchError(BadInput):
    """A model that cannot watch this input (wrong model type, channels the frames lack)."""


# ---- gates --------------------------------------------------------------------------------


@dataclass
class TokenBucket:
    """``burst`` tokens at most, refilled at ``per_second``; :meth:`take` spends one."""

    per_second: float
    burst: float
    tokens: float = -1.0  # full at the first use
    last: float | None = None

    def __post_init__(self) -> None:
        if not (self.per_second >= 0 and self.burst >= 1):
            raise Misuse("a token bucket needs per_second >= 0 and burst >= 1")
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float) -> bool:
        if self.last is not None and now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.per_second)
        self.last = now if self.last is None else max(self.last, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class AlarmGate:
    """``k`` alarms within ``window`` seconds make one candidate incident (then it
    starts counting again): a single odd packet or window is not an incident."""

    k: int
    window: float
    times: deque[float] = field(default_factory=deque)

    def alarm(self, now: float) -> bool:
        self.times.append(now)
        while self.times and self.times[0] < now - self.window:
            self.times.popleft()
        if len(self.times) >= self.k:
            self.times.clear()
            return True
        return False


@dataclass(frozen=True)
class IncidentLimits:
    """How alarms of one kind become incidents (the same for every kind).

    Defaults: 3 alarms within 2 s make a candidate; at most 3 incidents at once per kind,
    then one per 10 s (a flood of alarms is 3 + elapsed/10 incidents, not thousands; at
    the default 10 s report interval, about one per report).
    """

    k: int = 3
    window: float = 2.0
    burst: float = 3.0
    per_second: float = 1.0 / 10.0

    def __post_init__(self) -> None:
        if self.k < 1 or not self.window > 0:
            raise Misuse("IncidentLimits: k >= 1 and window > 0")
        TokenBucket(self.per_second, self.burst)  # checks those two


class Incidents:
    """Running totals of incidents by kind, behind the gates; thread-safe (the capture
    thread and the frame clock raise, the report loop reads)."""

    def __init__(self, limits: IncidentLimits | None = None,
                 kinds: tuple[str, ...] = INCIDENT_KINDS) -> None:
        self.limits = limits or IncidentLimits()
        lim = self.limits
        self._lock = threading.Lock()
        self._gates = {k: AlarmGate(lim.k, lim.window) for k in kinds}
        self._buckets = {k: TokenBucket(lim.per_second, lim.burst) for k in kinds}
        self._totals: dict[str, int] = {}
        self.alarms: dict[str, int] = dict.fromkeys(kinds, 0)
        self.suppressed: dict[str, int] = dict.fromkeys(kinds, 0)

    def alarm(self, kind: str, now: float) -> bool:
        """One alarm of ``kind`` at ``now``; True when it became an incident."""
        with self._lock:
            if kind not in self._gates:
                raise Misuse(f"unknown incident kind {kind!r}")
            self.alarms[kind] += 1
            if not self._gates[kind].alarm(now):
                return False
            if not self._buckets[kind].take(now):
                self.suppressed[kind] += 1
                return False
            self._totals[kind] = self._totals.get(kind, 0) + 1
            return True

    def totals(self) -> dict[str, int]:
        """Incidents so far by kind (the runner reports the deltas)."""
        with self._lock:
            return dict(self._totals)


# ---- the network detector -------------------------------------------------------------


def set_unsafe_lru_eviction(extractor: Any, lru: bool) -> bool:
    """Switch a packet feature state's tables to the older least-recently-updated
    eviction (``lru=True``: the unsafe baseline of the flood tests) or back to the rule
    every build uses, least established first (:class:`tinyward.detect.netfeatures._Table`);
    False for another extractor (left as it is)."""
    if not isinstance(extractor, nf.NetFeatureExtractor):
        return False
    for table in (extractor.hosts, extractor.convs, extractor.sockets):
        table.lru = lru
    return True


#: Seconds after the watcher's first packet whose alarms are dropped (scored, counted in
#: ``NetStats.warmup``, never an incident). A restarted device opens a new TLS session and
#: new sockets that the trained state does not hold; their first packets score as young
#: flows (3 ``net.anomaly`` at start in the lab before this). The sensor watcher has the
#: same in windows (``SensorScorer.warmup``). An attack already running when the device
#: starts is seen after the warm-up (its packets keep alarming).
DEFAULT_NET_WARMUP = 15.0


@dataclass
class NetStats:
    """What the network watcher saw (kept on the device; not sent)."""

    frames: int = 0
    packets: int = 0
    alarms: int = 0
    novel: int = 0
    warmup: int = 0  # alarms dropped in the warm-up
    decode: ReadStats = field(default_factory=ReadStats)


class NetScorer:
    """A trained packet model applied to live frames (see module docstring).

    ``feed`` decodes and extracts features packet by packet (the state is sequential);
    ``flush`` scores the pending packets in one call (per-row arithmetic, so batching
    changes nothing but the cost) and returns ``[(kind, time), ...]`` for each alarm.
    """

    def __init__(self, model: Model, linktype: int = LINKTYPE_ETHERNET, *,
                 warmup: float = DEFAULT_NET_WARMUP, unsafe_lru_eviction: bool = False) -> None:
        if warmup < 0:
            raise Misuse("warmup must be >= 0 seconds")
        if not isinstance(model.features, PacketFeatures):
            raise WatchError("--net-model must be a packet model (`tinyward detect train "
                             "CAPTURE.pcap`), not a sensor model")
        self.model = model
        self.linktype = linktype
        self._strip = model.features.strip_tcp_options
        self._extractor = model.features.extractor.copy()  # continues the trained state
        # The trained state's tables evict the least established slot, as training,
        # `detect score` and the C export do: established flows survive floods
        # (docs/on-device-detection.md, "State under floods"). unsafe_lru_eviction: the
        # older rule, only as the flood tests' baseline.
        set_unsafe_lru_eviction(self._extractor, unsafe_lru_eviction)
        self.protected = not unsafe_lru_eviction
        self.warmup = warmup
        self._until: float | None = None  # the end of the warm-up, in packet time
        self._shift: float | None = None
        self._rows: list[list[float]] = []
        self._packets: list[Packet] = []
        self.stats = NetStats()

    @property
    def arithmetic(self) -> str:
        """Which arithmetic scores the packets (said at start-up and in the bench)."""
        detector = self.model.detector
        name = getattr(self.model.fusion, "name", None) or getattr(detector, "name", "?")
        if getattr(detector, "integer_scores", False):
            return (f"{name}: int8 integer reference (bit-exact with `detect export`'s C), "
                    "features in double as the C double build")
        return f"{name}: the Python float model (this kind has no integer C reference)"

    def state_bytes(self) -> int:
        """Device RAM the detector's state takes in C (features, float build, plus the
        novelty set and class table); the model constants are flash."""
        extra = self.model.fusion.extra_bytes() if self.model.fusion is not None else 0
        return int(self._extractor.state_bytes(4)) + extra

    def feed(self, frame: bytes, ts: float) -> None:
        """Decode one frame and fold it into the feature state (scored at ``flush``)."""
        self.stats.frames += 1
        packet = decode_frame(ts, self.linktype, frame, strip_tcp_options=self._strip,
                              stats=self.stats.decode)
        if packet is None:
            return
        if self._until is None:
            self._until = ts + self.warmup
        if self._shift is None:
            # Continue one second after the trained state, as `detect score` does.
            last = self._extractor.last_ts
            self._shift = 0.0 if last == -math.inf else last + 1.0 - ts
        self._rows.append(self._extractor.update(packet, self._shift))
        self._packets.append(packet)
        self.stats.packets += 1

    def flush(self) -> list[tuple[str, float]]:
        """Score the packets fed since the last flush; the alarms as (kind, packet time)."""
        if not self._rows:
            return []
        X = np.asarray(self._rows, dtype=np.float64)
        packets, self._rows, self._packets = self._packets, [], []
        model, fusion = self.model, self.model.fusion
        scores = np.asarray(model.detector.score(X), dtype=np.float64)
        novel = np.zeros(len(packets), dtype=bool)
        if fusion is not None and fusion.scale is not None:
            # fusion.alarms's rule (novel OR score > t[class], on the raw score), with the
            # score and the novelty hash computed once: the kind needs the two apart.
            classes = (packet_classes(packets) if fusion.per_class
                       else np.zeros(len(packets), np.int64))
            z_alarm = scores > fusion.scale.threshold[classes]
            if fusion.novelty is not None:
                novel = fusion.novelty.novel(packets)
        else:
            z_alarm = scores > model.detector.threshold
        out: list[tuple[str, float]] = []
        until = self._until if self._until is not None else -math.inf
        for packet, alarm, new in zip(packets, z_alarm, novel, strict=True):
            if packet.ts < until and (new or alarm):
                self.stats.warmup += 1  # scored, never an alarm: see DEFAULT_NET_WARMUP
                continue
            if new:
                out.append(("net.novel", packet.ts))
            elif alarm:
                out.append(("net.anomaly", packet.ts))
        self.stats.alarms += len(out)
        self.stats.novel += int(np.count_nonzero(novel))
        return out


# ---- the sensor detector --------------------------------------------------------------


class SensorScorer:
    """A trained sensor model applied to the frames the core hands the application.

    ``channels`` are the application's input channels (its manifest's ``[input]``); the
    model's channels must be among them (picked by name). Each frame is ``(samples,
    channels)``; windows are scored as they complete, on a fresh stream (as ``detect
    score`` scores a CSV). The model's smoother, if any, is not applied: each window
    above the threshold is one alarm and the :class:`AlarmGate` does the smoothing.
    The first ``warmup`` windows of the stream are scored but never alarm: a fresh
    stream's baselines and yardstick are still settling (on a benign test stream the
    first ~20 windows alarmed, none after).
    """

    def __init__(self, model: Model, channels: tuple[str, ...], warmup: int = 30) -> None:
        if not isinstance(model.features, SensorFeatures):
            raise WatchError("--sensor-model must be a sensor model (`tinyward detect train "
                             "--sensors FILE.csv`), not a packet model")
        extractor = model.features.extractor.copy()
        missing = [c for c in extractor.channels if c not in channels]
        if missing:
            raise WatchError(f"the sensor model needs channels {missing}, which the "
                             f"application's frames ({list(channels)}) lack")
        extractor.reset_stream()
        self.model = model
        self._extractor = extractor
        self._columns = [channels.index(c) for c in extractor.channels]
        self._threshold = float(model.detector.threshold)
        self.warmup = warmup
        self.frames = 0
        self.windows = 0
        self.alarms = 0

    def feed(self, frame: np.ndarray) -> int:
        """Score one frame's samples; returns how many windows alarmed."""
        values = np.asarray(frame, dtype=np.float64)
        if values.ndim == 1:
            values = values.reshape(-1, 1)
        X = self._extractor.transform(values[:, self._columns])
        self.frames += 1
        if not len(X):
            return 0
        scores = self.model.detector.score(X)
        settled = np.arange(self.windows, self.windows + len(X)) >= self.warmup
        n = int(np.count_nonzero((scores > self._threshold) & settled))
        self.windows += len(X)
        self.alarms += n
        return n


class TappedFrames:
    """The frames iterator the core feeds the application, tapped on the core side: each
    frame is scored by ``scorer`` before the application gets it (the application never
    sees the scorer, its model or its verdict)."""

    def __init__(self, frames: Any, scorer: SensorScorer, incidents: Incidents,
                 clock: Callable[[], float]) -> None:
        self._frames = iter(frames)
        self.scorer, self._incidents, self._clock = scorer, incidents, clock
        self.errors = 0

    def __iter__(self) -> TappedFrames:
        return self

    def __next__(self) -> np.ndarray:
        frame: np.ndarray = next(self._frames)
        try:
            for _ in range(self.scorer.feed(frame)):
                self._incidents.alarm("sensor.tamper", self._clock())
        except (ValueError, ArithmeticError, Misuse):
            # A frame the model cannot score (shape) is counted, and still goes to the app:
            # the detector must never stop the sensor.
            self.errors += 1
        return frame


def incident_totals(*sources: Mapping[str, int]) -> dict[str, int]:
    """Sum running totals of several counters (the app's and the watcher's)."""
    out: dict[str, int] = {}
    for totals in sources:
        for kind, n in totals.items():
            out[kind] = out.get(kind, 0) + n
    return out


__all__ = ["DEFAULT_NET_WARMUP", "INCIDENT_KINDS", "AlarmGate",
           "IncidentLimits", "Incidents", "NetScorer", "NetStats", "SensorScorer",
           "TappedFrames", "TokenBucket", "WatchError", "incident_totals",
           "set_unsafe_lru_eviction"]
