"""Fuse a packet detector's score with peer/service novelty and per-class thresholds.

**Protocol classes.** Each packet falls in one of :data:`CLASSES` by its destination
and protocol (never by a feature): unicast TCP, unicast UDP, local broadcast/discovery
(IPv4 broadcast or multicast, IPv6 multicast, NetBIOS ports 137-138), ICMP/ICMPv6, and
other. A handful of benign broadcasts (IPv6 router and DHCP solicitations, NetBIOS
datagrams) scores far above ordinary traffic; with one threshold for everything they
set the bar at low false-positive rates (issue 13). Here each class is scored against
its own history: the class threshold ``t_c`` is chosen on the benign training scores of
that class at the target FPR (with fewer than ``1/fpr`` scores, that is their maximum),
and the class median ``m_c`` gives the normalised score
``z = (score - m_c) / (t_c - m_c)``: ``z > 1`` exactly when ``score > t_c``. A class
never seen in training uses the detector's own (global) threshold and median.

**One budget for the fused alarm (issue 13).** The alarm is ``novel OR z > 1``, so its
rate on benign traffic is at most the novelty channel's rate plus the statistical
channel's. The novelty channel's benign rate is measured on the training stream's later
stretch (the detector's calibration stretch) with a set fitted on the earlier part only
(:func:`later_novelty_rate`): the share of later packets with a tuple the earlier
traffic never showed. The statistical channel (class and global thresholds) is then
calibrated for ``target - that rate``, so the fused alarm keeps the requested total.
When novelty alone reaches the target, no budget is left: the fit warns loudly
(:class:`~tinyward.detect.threshold.ThresholdWarning`, naming both rates) and keeps the
statistical channel at the full target. (The deployed set is fitted on all the
training packets, so it knows more tuples than the measuring set: the allotment errs
towards fewer alarms.)

**Fusion rule.** ``alarm = novel OR z > 1``. The continuous fused score, for ROC
curves and rates, is ``z`` for a known tuple and ``NOVEL_OFFSET + z`` for a novel one
(``z`` clipped to +-``Z_CLIP``), so an alarm is exactly ``fused > 1`` and every novel
packet ranks above every known one.

The thresholds come from :func:`_class_thresholds`, the only call into the threshold
code: :func:`tinyward.detect.threshold.calibrate` (peaks over threshold where a class has
the scores for it, its largest score otherwise, without a warning per class).
When the wrapped detector was calibrated by the new-peer rule (:mod:`.newpeers`, fitted
with ``new_peers``), each class is calibrated the same way: on its rows of the later
training stretch, as it is and as new peers, keeping the higher threshold. Otherwise
the calibration scores are the training rows' own (in-sample) scores. Either way rare
classes have too few rows for a tail (their largest score is the threshold); the
realised FPR must be checked on later benign data (``tinyward bench detect`` reports
it at 0.1 % and 1 %).

Cost on top of the detector, per packet: the class (<= 8 compares), one subtraction,
one multiply (by a stored reciprocal) and one compare; plus the novelty lookup
(:data:`tinyward.detect.novelty.OPS_PER_PACKET`). Bytes: 3 float32 per class (60) plus
the novelty set.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyward.detect.errors import DetectMisuse
from tinyward.detect.novelty import DEFAULT_CAPACITY, NoveltySet
from tinyward.detect.pcap import Packet
from tinyward.detect.threshold import Policy, ThresholdWarning, calibrate

CLASSES = ("unicast-tcp", "unicast-udp", "broadcast", "icmp", "other")
NOVEL_OFFSET = 1e6
Z_CLIP = 1e5
CLASS_OPS = 8 + 3  # class compares; subtract, multiply, compare
_NETBIOS = (137, 138)


def packet_class(packet: Packet) -> int:
    """The index in :data:`CLASSES` of ``packet`` (destination and protocol only)."""
    dst, proto = packet.dst, packet.proto
    if proto in (1, 58):
        return 3
    if len(dst) == 4:
        group = 224 <= dst[0] <= 239 or dst == b"\xff\xff\xff\xff" or dst[3] == 255
    else:
        group = dst[0] == 0xFF
    if group or (proto == 17 and (packet.sport in _NETBIOS or packet.dport in _NETBIOS)):
        return 2
    return 0 if proto == 6 else 1 if proto == 17 else 4


def packet_classes(packets: Sequence[Packet]) -> np.ndarray:
    return np.fromiter((packet_class(p) for p in packets), dtype=np.int64, count=len(packets))


def later_novelty_rate(earlier: Sequence[Packet], later: Sequence[Packet], *,
                       capacity: int = DEFAULT_CAPACITY, key: bytes | None = None,
                       granularity: str = "pair") -> float:
    """Share of ``later`` packets whose tuple a novelty set fitted on ``earlier`` does not
    know: the novelty channel's benign rate on traffic it was not fitted on."""
    if not later:
        return 0.0
    probe = NoveltySet.fit(earlier, capacity=capacity, key=key, granularity=granularity)
    return float(np.mean(probe.novel(later)))


def _class_thresholds(scores: np.ndarray, target_fpr: float) -> float:
    """The one place that asks the threshold code for a threshold (see module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes always lack a tail; not news
        return calibrate(scores, target_fpr, policy=Policy(on_insufficient="warn",
                                                           bootstrap=0)).threshold


@dataclass
class ClassScale:
    """Per class: threshold, median and the count of training packets it was fitted on."""

    threshold: np.ndarray
    median: np.ndarray
    count: np.ndarray

    @classmethod
    def fit(cls, scores: np.ndarray, classes: np.ndarray, target_fpr: float,
            global_threshold: float, n_new_peer_rows: int = 0) -> ClassScale:
        """Per class from ``scores``; with ``n_new_peer_rows``, the last that many are the
        new-peer rows (:mod:`tinyward.detect.newpeers`): each class is calibrated on both
        parts apart and keeps the higher threshold."""
        n = len(CLASSES)
        threshold = np.full(n, float(global_threshold))
        median = np.full(n, float(np.median(scores)) if len(scores) else 0.0)
        count = np.zeros(n, dtype=np.int64)
        split = len(scores) - n_new_peer_rows
        for c in range(n):
            mask = classes == c
            mine = scores[mask]
            count[c] = len(mine)
            if len(mine):
                parts = [scores[:split][mask[:split]], scores[split:][mask[split:]]]
                threshold[c] = max(_class_thresholds(part, target_fpr)
                                   for part in parts if len(part))
                median[c] = float(np.median(mine))
        return cls(threshold, median, count)

    def normalise(self, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
        t, m = self.threshold[classes], self.median[classes]
        span = np.maximum(t - m, np.maximum(1e-9 * np.abs(t), 1e-12))
        return np.asarray((scores - m) / span, dtype=np.float64)

    def to_doc(self) -> dict[str, Any]:
        return {"threshold": self.threshold.tolist(), "median": self.median.tolist(),
                "count": self.count.tolist()}

    @classmethod
    def from_doc(cls, doc: Any) -> ClassScale:
        """Rebuild from :meth:`to_doc` output (hostile input). Raises DetectMisuse."""
        n = len(CLASSES)
        try:
            threshold = np.asarray(doc["threshold"], dtype=np.float64)
            median = np.asarray(doc["median"], dtype=np.float64)
            count = np.asarray(doc["count"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as error:
            raise DetectMisuse(f"bad class scales: {error!r}") from None
        if threshold.shape != (n,) or median.shape != (n,) or count.shape != (n,):
            raise DetectMisuse(f"class scales must hold {n} values each")
        if not (np.all(np.isfinite(threshold)) and np.all(np.isfinite(median))):
            raise DetectMisuse("a class scale that is not a finite number")
        return cls(threshold, median, count)


class FusedNetDetector:
    """A packet detector with novelty and/or per-class scaling (either may be off).

    ``fit(X, packets)`` fits the wrapped detector on the benign features ``X`` of the
    benign ``packets`` (one row per packet), then the class scales and the novelty set.
    """

    def __init__(self, base: Any, *, novelty: bool = True, per_class: bool = True,
                 capacity: int = DEFAULT_CAPACITY, key: bytes | None = None,
                 granularity: str = "pair", split_budget: bool = True) -> None:
        self.granularity = granularity
        #: Allot the FPR budget between novelty and statistics (module doc); False only
        #: to show what the fused alarm realises without it (tests, comparisons).
        self.split_budget = split_budget
        #: The novelty channel's rate on the later training stretch, the rate the
        #: statistical channel was calibrated for, and what the fit warned (set by ``fit``;
        #: saved under ``calibration`` in the model file, where the CLI and the lab read
        #: every calibration warning).
        self.novelty_rate = 0.0
        self.statistical_fpr: float | None = None
        self.warnings: tuple[str, ...] = ()
        self.base = base
        self.use_novelty = novelty
        self.per_class = per_class
        self.capacity = capacity
        self.key = key
        self.novelty: NoveltySet | None = None
        self.scale: ClassScale | None = None
        suffix = (f"+novelty({granularity})" if novelty else "") + ("+classes" if per_class else "")
        self.name = f"{getattr(base, 'name', type(base).__name__)}{suffix}"
        self.threshold = 1.0  # an alarm is fused > 1

    def fit(self, X: np.ndarray, packets: Sequence[Packet], *, target_fpr: float = 0.001,
            seed: int = 0, fit_base: bool = True,
            new_peers: np.ndarray | None = None) -> FusedNetDetector:
        """``new_peers``: passed to the wrapped detector's ``fit`` (see :mod:`.newpeers`)."""
        if len(X) != len(packets):
            raise DetectMisuse(f"{len(X)} feature rows for {len(packets)} packets")
        if fit_base:
            extra = {} if new_peers is None else {"new_peers": new_peers}
            self.base.fit(X, target_fpr=target_fpr, seed=seed, **extra)
        stat_rate = self._allot(packets, target_fpr)
        scores = np.asarray(self.base.score(X), dtype=np.float64)
        classes = packet_classes(packets) if self.per_class else np.zeros(len(X), np.int64)
        global_threshold = float(self.base.threshold)
        cal = self.base.threshold_at(stat_rate) if hasattr(self.base, "threshold_at") else None
        if cal is not None:
            global_threshold = cal.threshold
        held = getattr(self.base, "calibration_scores", None)
        n_new = int(getattr(self.base, "n_new_peer_rows", 0))
        if self.per_class and held is not None and n_new and cal is not None and (
                cal.method != "unsafe-legacy"):
            # The base was calibrated by the new-peer rule: each class too, on its rows of
            # the later stretch, as it is and as new peers (the higher threshold).
            n_hold = len(held) - n_new
            cal_classes = np.r_[classes[len(X) - n_hold:], classes[len(X) - n_new:]]
            self.scale = ClassScale.fit(held, cal_classes, stat_rate, global_threshold,
                                        n_new_peer_rows=n_new)
        else:
            self.scale = ClassScale.fit(scores, classes, stat_rate, global_threshold)
        if not self.per_class:  # one class: the detector's own threshold, global median
            self.scale.threshold[:] = global_threshold
        if self.use_novelty:
            self.novelty = NoveltySet.fit(packets, capacity=self.capacity, key=self.key,
                                          granularity=self.granularity)
        return self

    def _allot(self, packets: Sequence[Packet], target_fpr: float) -> float:
        """The statistical channel's rate: ``target_fpr`` less the novelty channel's rate
        on the later stretch (module doc); sets :attr:`novelty_rate` and, when it was
        measured, :attr:`statistical_fpr`."""
        self.novelty_rate, self.statistical_fpr, self.warnings = 0.0, None, ()
        cal = getattr(self.base, "calibration", None)
        n_fit = cal.n_fit if cal is not None and cal.method != "unsafe-legacy" else 0
        if not (self.use_novelty and self.split_budget and 0 < n_fit < len(packets)):
            return target_fpr
        self.novelty_rate = later_novelty_rate(
            packets[:n_fit], packets[n_fit:], capacity=self.capacity, key=self.key,
            granularity=self.granularity)
        if self.novelty_rate >= target_fpr:
            note = (f"novelty alone alarms on {100 * self.novelty_rate:.3g} % of the later "
                    f"benign training stretch (a set fitted on the earlier part), at or "
                    f"above the {100 * target_fpr:.3g} % FPR requested: the fused alarm "
                    "cannot keep its rate (train on traffic that shows all the device's "
                    "peers early, ask for a higher rate, or use coarser novelty)")
            self.warnings, self.statistical_fpr = (note,), target_fpr
            warnings.warn(note, ThresholdWarning, stacklevel=3)
            return target_fpr
        self.statistical_fpr = target_fpr - self.novelty_rate
        return self.statistical_fpr

    def parts(self, X: np.ndarray, packets: Sequence[Packet]) -> tuple[np.ndarray, np.ndarray]:
        """(normalised score z, novel) per packet."""
        if self.scale is None:
            raise DetectMisuse("fit the detector first")
        scores = np.asarray(self.base.score(X), dtype=np.float64) if len(X) else np.zeros(0)
        classes = packet_classes(packets) if self.per_class else np.zeros(len(X), np.int64)
        z = self.scale.normalise(scores, classes)
        novel = (self.novelty.novel(packets) if self.novelty is not None
                 else np.zeros(len(X), dtype=bool))
        return z, novel

    def score(self, X: np.ndarray, packets: Sequence[Packet]) -> np.ndarray:
        """The continuous fused score (see module docstring); alarm when > 1."""
        z, novel = self.parts(X, packets)
        return np.asarray(np.clip(z, -Z_CLIP, Z_CLIP) + NOVEL_OFFSET * novel, dtype=np.float64)

    def alarms(self, X: np.ndarray, packets: Sequence[Packet]) -> np.ndarray:
        """``novel OR score > t_c``, compared on the raw score as the C export does
        (the same as ``fused > 1`` but free of the division's rounding)."""
        if self.scale is None:
            raise DetectMisuse("fit the detector first")
        scores = np.asarray(self.base.score(X), dtype=np.float64) if len(X) else np.zeros(0)
        classes = packet_classes(packets) if self.per_class else np.zeros(len(X), np.int64)
        novel = (self.novelty.novel(packets) if self.novelty is not None
                 else np.zeros(len(X), dtype=bool))
        return np.asarray(novel | (scores > self.scale.threshold[classes]), dtype=bool)

    def extra_bytes(self) -> int:
        """Bytes on the device beyond the wrapped model: class table and novelty set."""
        classes = 3 * 4 * len(CLASSES) if self.per_class else 0
        return classes + (self.novelty.nbytes() if self.novelty is not None else 0)

    def extra_ops(self) -> int:
        ops = CLASS_OPS if self.per_class else 3
        if self.novelty is not None:
            ops += self.novelty.ops_per_packet(len(self.novelty))
        return ops

    def to_doc(self) -> dict[str, Any]:
        """The fusion's own state (the wrapped detector is saved apart)."""
        if self.scale is None:
            raise DetectMisuse("fit the detector first")
        return {"per_class": self.per_class, "scale": self.scale.to_doc(),
                "novelty": self.novelty.to_doc() if self.novelty is not None else None,
                "calibration": {"novelty_rate": self.novelty_rate,
                                "statistical_fpr": self.statistical_fpr,
                                "warnings": list(self.warnings)}}

    @classmethod
    def from_doc(cls, base: Any, doc: Any) -> FusedNetDetector:
        """Rebuild around the loaded ``base`` detector (hostile input). Raises DetectMisuse."""
        if not isinstance(doc, dict) or not isinstance(doc.get("per_class"), bool):
            raise DetectMisuse("bad fusion state: not an object with 'per_class'")
        novelty = None if doc.get("novelty") is None else NoveltySet.from_doc(doc["novelty"])
        fused = cls(base, novelty=novelty is not None, per_class=doc["per_class"],
                    granularity=novelty.granularity if novelty is not None else "pair")
        fused.scale = ClassScale.from_doc(doc.get("scale"))
        fused.novelty = novelty
        budget = doc.get("calibration")  # absent in model files before the FPR budget
        if budget is not None:
            fused.novelty_rate, fused.statistical_fpr, fused.warnings = _budget_from_doc(budget)
        return fused


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _budget_from_doc(budget: Any) -> tuple[float, float | None, tuple[str, ...]]:
    """(novelty rate, statistical rate, warnings) of a saved fusion (hostile input).

    Raises:
        DetectMisuse: not the shape :meth:`FusedNetDetector.to_doc` writes.
    """
    if not isinstance(budget, dict):
        raise DetectMisuse("bad fusion calibration: not an object")
    rate: Any = budget.get("novelty_rate")
    stat: Any = budget.get("statistical_fpr")
    notes: Any = budget.get("warnings")
    if not (_number(rate) and 0.0 <= rate <= 1.0):
        raise DetectMisuse("bad fusion calibration: novelty_rate must be in [0, 1]")
    if stat is not None and not (_number(stat) and 0.0 < stat < 1.0):
        raise DetectMisuse("bad fusion calibration: statistical_fpr must be in (0, 1)")
    if not (isinstance(notes, list) and len(notes) <= 4
            and all(isinstance(n, str) and len(n) <= 2000 for n in notes)):
        raise DetectMisuse("bad fusion calibration: warnings must be a short list of text")
    return float(rate), None if stat is None else float(stat), tuple(notes)
