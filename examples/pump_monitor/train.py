"""Choose the pump monitor's hyper-parameters from normal data only; write ``model.npz``.

The SKAB protocol fits a detector per run on that run's first 400 rows, so what the device
ships is not a fitted model but the rules for fitting one: how much variance the PCA keeps,
how long the score is smoothed, how far above its calibration peak the alarm sits, and how
much each channel wanders over longer stretches than 400 s.

The rule, fixed before evaluating (no labelled SKAB run is read here):

1. Cut the anomaly-free recording (``anomaly-free/anomaly-free.csv``, 9,405 s, unlabelled)
   into overlapping 1,150-row segments (the length of a typical run), stride 575.
2. ``drift``: per channel, the median over segments of the RMS deviation of rows 400..1149
   from the mean of rows 0..399, in units of the rows 0..399 standard deviation (>= 1).
3. Inject synthetic faults into rows 400..1149 of each segment (fixed seed): a step on one
   to three random channels, 1.5-3 times the channel's standard deviation over the whole
   recording, random sign, 20 s ramp, 150-450 s long. These stand in for the unknown
   faults; they are not SKAB's faults.
4. Grid-search kept variance x smoothing x margin x (drift on / off) and keep the setting
   with the best F1 on those synthetic faults (rows 400.. of every segment, concatenated).

Run: ``python examples/pump_monitor/train.py`` (a few seconds).
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import sys

import numpy as np
from scipy.signal import lfilter

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import skab
from pump_monitor_app import PumpMonitor

HERE = pathlib.Path(__file__).resolve().parent
SEGMENT = 1150
STRIDE = 575
FAULTS_PER_SEGMENT = 3
SEED = 20201
GRID_VAR = (0.8, 0.9, 0.95, 0.99)
GRID_ALPHA = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02)
GRID_MARGIN = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)


def segments(values: np.ndarray) -> list[np.ndarray]:
    """Overlapping run-length segments of a long normal recording."""
    return [values[i : i + SEGMENT] for i in range(0, len(values) - SEGMENT + 1, STRIDE)]


def estimate_drift(segs: list[np.ndarray], calibration: int) -> np.ndarray:
    """Per-channel wander after calibration, in calibration standard deviations (>= 1)."""
    ratios = []
    for seg in segs:
        cal, rest = seg[:calibration], seg[calibration:]
        sd = np.maximum(cal.std(axis=0, ddof=1), 1e-3 * np.maximum(np.abs(cal.mean(0)), 1e-3))
        ratios.append(np.sqrt(np.mean((rest - cal.mean(0)) ** 2, axis=0)) / sd)
    return np.maximum(np.median(np.asarray(ratios), axis=0), 1.0)


def inject_faults(
    segs: list[np.ndarray], calibration: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Copies of each segment with one synthetic step fault after calibration, and labels."""
    spread = np.std(np.concatenate(segs), axis=0)
    out = []
    for seg in segs:
        for _ in range(FAULTS_PER_SEGMENT):
            values = seg.copy()
            labels = np.zeros(len(seg), dtype=bool)
            length = int(rng.integers(150, 451))
            start = int(rng.integers(calibration + 50, len(seg) - 100))
            stop = min(start + length, len(seg))
            channels = rng.choice(len(spread), size=int(rng.integers(1, 4)), replace=False)
            shift = rng.uniform(1.5, 3.0, size=len(channels)) * rng.choice([-1, 1], len(channels))
            ramp = np.minimum(np.arange(stop - start) / 20.0, 1.0)
            values[start:stop, channels] += ramp[:, None] * shift * spread[channels]
            labels[start:stop] = True
            out.append((values, labels))
    return out


def smoothed_scores(monitor: PumpMonitor, values: np.ndarray, calibration: int) -> np.ndarray:
    """What the app computes frame by frame after calibration, vectorised for the search."""
    monitor.fit(values[:calibration])
    raw = monitor.score(values[calibration:])
    a = monitor.ema_alpha
    smoothed, _ = lfilter([a], [1.0, -(1.0 - a)], raw, zi=[(1.0 - a) * monitor._ema])
    return smoothed / monitor.calibration_peak


def f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = int(np.sum(pred & truth))
    return 2 * tp / max(2 * tp + int(np.sum(pred & ~truth)) + int(np.sum(~pred & truth)), 1)


def search(
    runs: list[tuple[np.ndarray, np.ndarray]], drift: np.ndarray, calibration: int
) -> tuple[float, dict[str, object]]:
    """Best (F1, setting) over the grid on the synthetic runs."""
    truth = np.concatenate([labels[calibration:] for _, labels in runs])
    best: tuple[float, dict[str, object]] = (-1.0, {})
    for var, alpha, use_drift in itertools.product(GRID_VAR, GRID_ALPHA, (True, False)):
        d = drift if use_drift else np.ones_like(drift)
        ratio = np.concatenate(
            [
                smoothed_scores(PumpMonitor(var_explained=var, ema_alpha=alpha, drift=d), v, calibration)
                for v, _ in runs
            ]
        )
        for margin in GRID_MARGIN:
            score = f1(ratio > margin, truth)
            if score > best[0]:
                best = (score, {"var_explained": var, "ema_alpha": alpha, "margin": margin, "drift": d})
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=pathlib.Path, default=None, help="SKAB folder")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "model.npz")
    args = parser.parse_args(argv)
    calibration = skab.TRAIN_ROWS
    normal = skab.anomaly_free(args.data).values
    segs = segments(normal)
    drift = estimate_drift(segs, calibration)
    runs = inject_faults(segs, calibration, np.random.default_rng(SEED))
    best_f1, setting = search(runs, drift, calibration)
    np.savez(
        args.out,
        calibration_frames=np.int32(calibration),
        var_explained=np.float32(setting["var_explained"]),
        ema_alpha=np.float32(setting["ema_alpha"]),
        margin=np.float32(setting["margin"]),
        drift=np.asarray(setting["drift"], dtype=np.float32),
    )
    print(f"{len(segs)} normal segments, {len(runs)} synthetic fault runs")
    print("drift per channel:", " ".join(f"{c}={v:.2f}" for c, v in zip(skab.SENSOR_COLUMNS, drift)))
    shown = {k: v for k, v in setting.items() if k != "drift"}
    uses_drift = bool(np.any(np.asarray(setting["drift"]) > 1.0))
    print(f"chosen: {shown}, drift {'on' if uses_drift else 'off'}; F1 on synthetic faults {best_f1:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
