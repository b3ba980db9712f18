"""A held jump integrator OR-ed with the detector and lagz: tried, NOT adopted (h-tamper5).

    PYTHONPATH=src .venv/bin/python benchmarks/sensor_jumphold.py [SKAB] [--test]

The idea (issue 13, item 6): a bias begins with a step. On the smooth channels
(Temperature, Thermocouple) that step is tens of times the channel's sample-to-sample
steps while the biased level stays within the channel's slow wander (lagz's own-channel
oracle there: 0.70-0.76 on the test streams, docs/detect.md). So, per channel and per
sample: ``S = lam S + sign(d) max(0, |d| - k m) / m`` with ``d`` the step, ``m`` the
channel's local step scale before it and ``k`` the channel's benign 99.9th percentile of
``|d| / m``; the window's value is the largest ``|S|`` in it, over the channel's largest
benign value (at least 1) times a margin: one alarm per window, the largest over
channels, OR-ed (max) with ChannelAlarmFused's score. ``S`` is stream state (it holds
the step until the level steps back or ``lam`` forgets it). ``S`` is held at 0 for the
first ``warm`` samples of a stream so that ``m`` learns the new recording first.

Variants (dev split only, the families' rule: highest dev mean AUC over six kinds among
variants with <= 1 % dev benign windows above 1): ``m`` an EWMA of ``|d|`` (start:
benign median) or a decaying peak of ``|d|`` (start: benign 99th percentile), half-life
120 or 300 samples for both ``lam`` and ``m``; margin the smallest of 1 ... 4 whose
false alarms stay <= 1 % with the dev split's roles swapped (as LAGZ_MARGIN).
``--test`` also prints every variant on the eval's test streams (scored once, after the
choice; figures in docs/detect.md). ~1 min (dev), ~2 min (--test).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

from tinyward.detect import evaluate, sensordev
from tinyward.detect.models import make_detector
from tinyward.detect.sensorfeatures import (
    DEFAULT_FAMILIES,
    SKAB_CHANNELS,
    SensorFeatureConfig,
    SensorFeatureExtractor,
    resolution,
)
from tinyward.detect.sensorfusion import ChannelAlarmFused
from tinyward.detect.tamper import TAMPER_KINDS, tamper_stream, window_kind

VARIANTS = (("ewma", 120.0), ("ewma", 300.0), ("peak", 120.0), ("peak", 300.0))
MARGINS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
WARM = 240  # samples: lagz's reference reach + gap, the other alarm's own warm-up


class JumpHold:
    def __init__(self, scale: str, halflife: float, kq: float = 0.999) -> None:
        self.peak = scale == "peak"
        self.lam = 0.5 ** (1 / halflife)
        self.kq = kq

    def _next_scale(self, m: np.ndarray, step: np.ndarray) -> np.ndarray:
        new = np.maximum(self.lam * m, step) if self.peak else self.lam * m + (1 - self.lam) * step
        return np.maximum(new, self.floor)

    def fit(self, streams: list[np.ndarray]) -> JumpHold:
        joined = np.vstack(streams)
        self.mean, self.std = joined.mean(0), joined.std(0)
        self.floor = np.array([resolution(joined[:, i]) for i in range(joined.shape[1])]) / self.std
        zs = [(v - self.mean) / self.std for v in streams]
        steps = np.vstack([np.abs(np.diff(z, axis=0)) for z in zs])
        self.m0 = np.maximum(np.quantile(steps, 0.99 if self.peak else 0.5, axis=0), self.floor)
        ratios = []
        for z in zs:
            m = self.m0.copy()
            for d in np.abs(np.diff(z, axis=0)):
                ratios.append(d / m)
                m = self._next_scale(m, d)
        self.k = np.quantile(np.asarray(ratios), self.kq, axis=0)
        return self

    def windows(self, values: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
        """(windows, channels): the largest |S| in each window ``[end - window, end)``."""
        z = (values - self.mean) / self.std
        held = np.zeros_like(z)
        s, m = np.zeros(z.shape[1]), self.m0.copy()
        for t in range(1, len(z)):
            d = z[t] - z[t - 1]
            s = self.lam * s + np.sign(d) * np.maximum(0.0, np.abs(d) - self.k * m) / m
            if t < WARM:
                s[:] = 0.0
            held[t] = np.abs(s)
            m = self._next_scale(m, np.abs(d))
        return np.stack([held[e - window : e].max(0) for e in ends]).reshape(-1, z.shape[1])


def scored(fit: list[np.ndarray], test: list[np.ndarray], seed: int) -> dict:
    """Default features + lagz and every variant's per-channel window values, for the fit
    streams, the test streams clean and tampered (the eval's protocol and seeds)."""
    extractor = SensorFeatureExtractor(
        SKAB_CHANNELS, SensorFeatureConfig(families=(*DEFAULT_FAMILIES, "lagz")))
    train = extractor.fit(fit)
    window = extractor.config.window
    jumps = [JumpHold(s, h).fit(fit) for s, h in VARIANTS]

    def run(values: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        stream = extractor.copy()
        stream.reset_stream()
        rows = stream.transform(values)
        ends = stream.last_window_ends
        return rows, [j.windows(values, ends, window) for j in jumps], ends

    fit_jumps = [np.vstack(x) for x in zip(*(run(v)[1] for v in fit), strict=True)]
    benign: list = [[], [[] for _ in VARIANTS]]
    attacks = {k: [[], [[] for _ in VARIANTS]] for k in TAMPER_KINDS}
    for number, values in enumerate(test):
        rows, per, _ = run(values)
        benign[0].append(rows)
        for i, p in enumerate(per):
            benign[1][i].append(p)
        long = len(values) > 2000
        for round_ in range(evaluate.TAMPER_ROUNDS):
            t = tamper_stream(values, seed=seed + number + 100 * round_,
                              lead=700 if long else 330,
                              first_kind=round_ if long else number + round_)
            rows, per, ends = run(t.values)
            for r, end in enumerate(ends):
                kind = window_kind(t, max(0, int(end) - window), int(end))
                if kind is not None:
                    attacks[kind][0].append(rows[r])
                    for i, p in enumerate(per):
                        attacks[kind][1][i].append(p[r])
    return {"train": train, "fit_jumps": fit_jumps,
            "benign": (np.vstack(benign[0]), [np.vstack(x) for x in benign[1]]),
            "attacks": {k: (np.vstack(a), [np.vstack(x) for x in b])
                        for k, (a, b) in attacks.items()}}


def swapped_alarms(fit: list[np.ndarray], dev: list[np.ndarray],
                   variant: tuple[str, float]) -> list[float]:
    """Per margin, the share of the fit streams' windows above 1 with the variant
    calibrated on the dev streams (does its benign tail carry to other recordings?)."""
    jump = JumpHold(*variant).fit(dev)

    def windows(v: np.ndarray) -> np.ndarray:
        return jump.windows(v, np.arange(30, len(v) + 1, 10), 30)
    largest = np.maximum(np.vstack([windows(v) for v in dev]).max(0), 1.0)
    other = np.vstack([windows(v) for v in fit])
    return [float(np.mean((other / (m * largest)).max(1) > 1.0)) for m in MARGINS]


def report(label: str, data: dict, margin: float) -> None:
    fused = ChannelAlarmFused(make_detector("mahalanobis"))
    fused.fit(data["train"])
    print(f"== {label} (AUC {' / '.join(TAMPER_KINDS)}; benign windows above 1)")

    def show(name: str, benign: np.ndarray, attacks: dict[str, np.ndarray]) -> None:
        aucs = [evaluate.roc_auc(benign, attacks[k]) for k in TAMPER_KINDS]
        print(f"  {name:34s}", " ".join(f"{a:.3f}" for a in aucs),
              f"mean {np.mean(aucs):.3f}  alarms {100 * np.mean(benign > 1):.2f} %")

    base_b = fused.score(data["benign"][0])
    base_a = {k: fused.score(v[0]) for k, v in data["attacks"].items()}
    show("mahalanobis OR lagz (h-tamper4)", base_b, base_a)
    for i, (scale, hl) in enumerate(VARIANTS):
        tail = margin * np.maximum(data["fit_jumps"][i].max(0), 1.0)
        jb = (data["benign"][1][i] / tail).max(1)
        ja = {k: (v[1][i] / tail).max(1) for k, v in data["attacks"].items()}
        show(f"jump {scale} {hl:.0f} alone", jb, ja)
        show(f"... OR jump {scale} {hl:.0f}", np.maximum(base_b, jb),
             {k: np.maximum(base_a[k], ja[k]) for k in TAMPER_KINDS})


def main(skab: Path, test: bool) -> None:
    warnings.simplefilter("ignore")  # the small-calibration ThresholdWarning, every fit
    fit, dev = sensordev.dev_split(skab)
    for variant in VARIANTS:
        shares = swapped_alarms(fit, dev, variant)
        print(f"swapped check {variant}, margin: alarms", " ".join(
            f"{m}: {100 * a:.2f} %" for m, a in zip(MARGINS, shares, strict=True)))
    report("dev split, margin 1", scored(fit, dev, seed=100), 1.0)
    if test:
        train, tests = evaluate.sensor_files(skab)
        report("eval test streams, margin 1", scored([v for _, v in train],
                                                     [v for _, v in tests], seed=0), 1.0)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--test"]
    main(Path(args[0]) if args else Path("../shared/data/skab"), "--test" in sys.argv)
