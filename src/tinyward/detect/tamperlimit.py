"""How high can bias and drift AUC go on the injected-tamper protocol? (issue 13, item 6)

An evaluation aid, not a detector: it never runs on a device. It measures, for the
``bias`` and ``drift`` windows of :mod:`tinyward.detect.tamper`'s protocol (the same
seeds, rounds and window labels as :func:`tinyward.detect.evaluate.sensor_streams` and
:func:`tinyward.detect.sensordev.dev_features`), two ceilings:

* **own-channel oracle**: a window statistic computed on the tampered channel only
  (the oracle is told which channel was tampered, so nothing is diluted by the other
  seven), each tampered window's AUC against that channel's benign windows, averaged
  over windows. The statistic is lagz's (:mod:`.sensorfeatures`): the window mean
  against the ``reach`` samples ending ``gap`` before the window, in that reference's
  std (floor: the quantisation noise), in benign robust spreads. Next to it the same
  statistic's max over channels (what a detector that must also find the channel gets),
  plain and tail-matched (each channel over its own largest benign value).
* **drift ramp**: the same oracle per window position in the ramp, and the ceiling if
  every window whose injected mean offset is at least ``x`` sigma were separated
  perfectly and the rest kept the oracle's AUC. :func:`ramp_matched_filter_auc` gives,
  for contrast, what an ideal observer would get on white noise with a known baseline.

Windows whose stream holds no reference yet (the first ``gap + reach`` samples) are left
out, so the benign count is lower than the eval's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tinyward.detect.errors import DetectMisuse
from tinyward.detect.evaluate import roc_auc
from tinyward.detect.sensorfeatures import LAGZ_GAP, LAGZ_REACH, resolution
from tinyward.detect.tamper import tamper_stream, window_kind


@dataclass
class LaggedZ:
    """The per-channel lagged-reference statistic, scaled on benign fit streams."""

    window: int = 30
    step: int = 10
    gap: int = LAGZ_GAP
    reach: int = LAGZ_REACH
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std: np.ndarray = field(default_factory=lambda: np.zeros(0))
    quantum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    center: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spread: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def raw(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(window starts, signed z per channel) of every window with a full reference."""
        z = (np.asarray(values, dtype=np.float64) - self.mean) / self.std
        starts, rows = [], []
        for s in range(self.gap + self.reach, len(z) - self.window + 1, self.step):
            ref = z[s - self.gap - self.reach : s - self.gap]
            rows.append((z[s : s + self.window].mean(axis=0) - ref.mean(axis=0))
                        / np.maximum(ref.std(axis=0), self.quantum))
            starts.append(s)
        c = z.shape[1]
        return np.asarray(starts, dtype=np.int64), np.asarray(rows).reshape(-1, c)

    def fit(self, streams: Sequence[np.ndarray]) -> LaggedZ:
        """Scales from benign streams (each its own stream).

        Raises:
            DetectMisuse: no stream long enough for one window with a reference, or a
                constant channel.
        """
        joined = np.vstack(list(streams))
        self.mean = joined.mean(axis=0)
        res = np.array([resolution(joined[:, i]) for i in range(joined.shape[1])])
        if (res == 0).any():
            raise DetectMisuse("a constant channel: leave it out")
        self.std = np.maximum(joined.std(axis=0), res / math.sqrt(12.0))
        self.quantum = res / self.std / math.sqrt(12.0)
        rows = [self.raw(v)[1] for v in streams]
        fitted = np.vstack(rows) if rows else np.zeros((0, joined.shape[1]))
        if not len(fitted):
            raise DetectMisuse(f"need streams of at least {self.gap + self.reach + self.window} "
                               "samples")
        self.center = np.median(fitted, axis=0)
        self.spread = np.maximum(1.4826 * np.median(np.abs(fitted - self.center), axis=0),
                                 self.quantum)
        self.tail = np.maximum(np.max(self.scaled(fitted), axis=0), 1.0)
        return self

    def scaled(self, raw: np.ndarray) -> np.ndarray:
        """|z - benign median| in benign robust spreads, per channel."""
        return np.asarray(np.abs(raw - self.center) / self.spread)


@dataclass
class Ceilings:
    benign_windows: int
    counts: dict[str, int]
    own: dict[str, float]  # own-channel oracle AUC per kind
    own_by_channel: dict[str, dict[int, float]]
    max_plain: dict[str, float]
    max_tail: dict[str, float]
    # drift: (window end in s into the ramp, windows, mean offset in sigma, own AUC)
    ramp: list[tuple[int, int, float, float]]
    # drift: (offset bound x in sigma, share of drift windows under it, ceiling)
    ramp_ceiling: list[tuple[float, float, float]]


def ceilings(
    fit: Sequence[np.ndarray],
    test: Sequence[np.ndarray],
    *,
    seed: int,
    rounds: int = 6,
    bounds: Sequence[float] = (0.5, 1.0, 1.5),
) -> Ceilings:
    """The ceilings of the module docstring. ``fit`` scales the statistic; ``test`` is
    scored clean (benign) and tampered ``rounds`` times exactly as the eval does (seed
    ``seed + stream + 100 * round``; ``seed`` = 0 for the eval's test streams, 100 for
    the dev split)."""
    stat = LaggedZ().fit(fit)
    w = stat.window
    benign = np.vstack([stat.scaled(stat.raw(v)[1]) for v in test])
    rows: list[np.ndarray] = []
    kinds: list[str] = []
    chans: list[int] = []
    pos: list[int] = []
    offs: list[float] = []
    for number, values in enumerate(test):
        long = len(values) > 2000
        for round_ in range(rounds):
            t = tamper_stream(values, seed=seed + number + 100 * round_,
                              lead=700 if long else 330,
                              first_kind=round_ if long else number + round_)
            starts, raw = stat.raw(t.values)
            for s, row in zip(starts, stat.scaled(raw), strict=True):
                kind = window_kind(t, int(s), int(s) + w)
                if kind not in ("bias", "drift"):
                    continue
                inj = next(i for i in t.injections if i.start < s + w and i.start + i.length > s)
                sigma = float(values[max(0, inj.start - 300) : inj.start, inj.channel].std())
                offset = (t.values[s : s + w, inj.channel] - values[s : s + w, inj.channel]).mean()
                rows.append(row)
                kinds.append(kind)
                chans.append(inj.channel)
                pos.append(int(s) + w - inj.start)
                offs.append(abs(float(offset)) / max(sigma, 1e-12))
    attack = np.asarray(rows).reshape(-1, benign.shape[1])
    ka, ca, pa, oa = (np.asarray(x) for x in (kinds, chans, pos, offs))
    own_each = np.array([roc_auc(benign[:, c], attack[i : i + 1, c]) for i, c in enumerate(ca)])
    out = Ceilings(len(benign), {}, {}, {}, {}, {}, [], [])
    for kind in ("bias", "drift"):
        m = ka == kind
        out.counts[kind] = int(m.sum())
        out.own[kind] = float(own_each[m].mean()) if m.any() else math.nan
        out.own_by_channel[kind] = {int(c): float(own_each[m & (ca == c)].mean())
                                    for c in sorted(set(ca[m].tolist()))}
        out.max_plain[kind] = roc_auc(benign.max(axis=1), attack[m].max(axis=1))
        out.max_tail[kind] = roc_auc((benign / stat.tail).max(axis=1),
                                     (attack[m] / stat.tail).max(axis=1))
    m = ka == "drift"
    for p in sorted(set(pa[m].tolist())):
        mm = m & (pa == p)
        out.ramp.append((int(p), int(mm.sum()), float(oa[mm].mean()), float(own_each[mm].mean())))
    for x in bounds:
        low = m & (oa < x)
        ceiling = (own_each[low].sum() + (m & ~low).sum()) / max(int(m.sum()), 1)
        out.ramp_ceiling.append((float(x), float(low.sum() / max(int(m.sum()), 1)),
                                 float(ceiling)))
    return out


def ramp_matched_filter_auc(end: int, length: int = 120, peak: float = 4.0) -> float:
    """AUC of the ideal observer for a drift window ending ``end`` samples into the ramp
    (tamper.py's ``linspace(0, peak, length)`` in units of the noise), on white noise of
    std 1 around a KNOWN baseline: the matched filter's d' is the ramp's energy so far,
    ``sqrt(sum offset_t^2)``, and AUC = Phi(d' / sqrt 2). SKAB is not white noise around a
    known baseline: this says only that the injected size is not what caps the AUC."""
    t = np.arange(min(max(end, 0), length))
    d = float(np.sqrt(np.sum((peak * t / (length - 1)) ** 2)))
    return 0.5 * (1.0 + math.erf(d / 2.0))
