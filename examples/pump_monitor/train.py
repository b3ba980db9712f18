"""Write the pump monitor's ``model.npz``, without looking at any test row.

Default (``--method control-chart``, what ships): the constants of the published SKAB
T²+Q control chart — 85 % kept variance, limits at p = 0.999, a median of 5 — and the F
quantile for every possible number of components (the device has no scipy). Instant.

``--method ewma`` writes the alternative detector (``method = 1``), whose
hyper-parameters are searched as follows. The SKAB protocol fits a detector per run on that run's first 400 rows, so what the device
ships is not a fitted model but the rules for fitting one: which smoother (on the score, or
on the sensors before scoring), its factor, how much variance the PCA keeps, how far above
its calibration peak the alarm sits, and how much extra variance each sensor shows over
longer stretches than a calibration period.

The rule for ``--method ewma`` (no test row and no test label is read):

1. Normal data: the anomaly-free recording (``anomaly-free/anomaly-free.csv``, 9,405 s,
   unlabelled) cut into overlapping 1,150-row segments (a typical run's length, stride
   575), calibrated on their first 400 rows; and the training rows (0..399) of every
   labelled run whose training rows are all labelled normal (33 of 34; other/2 has a fault
   inside its training rows), calibrated on their first 200 rows.
2. ``extra``: per sensor, the median over anomaly-free segments of the mean square of the
   statistic after calibration minus its variance within calibration (>= 0).
3. Synthetic faults in the rows after calibration of every piece, three per piece, fixed
   seed: a step on one to three random sensors of 1.5-3 times the sensor's standard
   deviation over the anomaly-free recording, random sign, 20 s ramp, lasting 20-60 % of
   the rows after calibration. They stand in for the unknown faults; they are not SKAB's.
4. Grid search smoother x factor x kept variance x (extra on / off) x margin; keep the
   setting with the best F1 on the synthetic faults (all pieces concatenated).

Run: ``python examples/pump_monitor/train.py [--method ewma --out other.npz]`` (the
search takes about 25 s).
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
from pump_monitor_app import N_CHANNELS as PumpMonitorChannels
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


def features(monitor: PumpMonitor, values: np.ndarray, calibration: int) -> np.ndarray:
    """The statistic the monitor scores, per row of a segment, after fitting on its start."""
    monitor.fit(values[:calibration])
    z = (values - monitor.mean) / monitor.scale
    if not monitor.smooth_input:
        return z
    a = monitor.ema_alpha
    return lfilter([a], [1.0, -(1.0 - a)], z, axis=0)


def estimate_extra(segs: list[np.ndarray], calibration: int, alpha: float, smooth: bool) -> np.ndarray:
    """Per-sensor variance after calibration beyond that within it (median over segments)."""
    extras = []
    for seg in segs:
        monitor = PumpMonitor(ema_alpha=alpha, smooth_input=smooth, var_explained=1.0)
        f = features(monitor, seg, calibration)
        warm = monitor.warm_up(calibration) if smooth else 0
        within = np.var(f[warm:calibration], axis=0, ddof=1)
        extras.append(np.mean(f[calibration:] ** 2, axis=0) - within)
    return np.maximum(np.median(np.asarray(extras), axis=0), 0.0)


def inject_faults(
    pieces: list[tuple[np.ndarray, int]], spread: np.ndarray, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Copies of each (values, calibration rows) piece with one synthetic step fault after
    calibration: (values, labels, calibration rows)."""
    out = []
    for seg, calibration in pieces:
        rest = len(seg) - calibration
        for _ in range(FAULTS_PER_SEGMENT):
            values = seg.copy()
            labels = np.zeros(len(seg), dtype=bool)
            length = int(rng.integers(rest // 5, rest * 3 // 5 + 1))
            start = int(rng.integers(calibration + rest // 15, len(seg) - rest // 8))
            stop = min(start + length, len(seg))
            channels = rng.choice(len(spread), size=int(rng.integers(1, 4)), replace=False)
            shift = rng.uniform(1.5, 3.0, size=len(channels)) * rng.choice([-1, 1], len(channels))
            ramp = np.minimum(np.arange(stop - start) / 20.0, 1.0)
            values[start:stop, channels] += ramp[:, None] * shift * spread[channels]
            labels[start:stop] = True
            out.append((values, labels, calibration))
    return out


def scores_after_calibration(monitor: PumpMonitor, values: np.ndarray, calibration: int) -> np.ndarray:
    """What the app's ``step`` returns frame by frame after calibration, vectorised, divided
    by the calibration peak (so the alarm is ``> margin``)."""
    monitor.fit(values[:calibration])
    z = (values[calibration:] - monitor.mean) / monitor.scale
    a = monitor.ema_alpha
    if monitor.smooth_input:
        e, _ = lfilter([a], [1.0, -(1.0 - a)], z, axis=0, zi=((1.0 - a) * monitor._ema_input)[None, :])
        score = monitor.score_standardised(e)
    else:
        raw = monitor.score_standardised(z)
        score, _ = lfilter([a], [1.0, -(1.0 - a)], raw, zi=[(1.0 - a) * monitor._ema_score])
    return score / monitor.calibration_peak


def f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = int(np.sum(pred & truth))
    return 2 * tp / max(2 * tp + int(np.sum(pred & ~truth)) + int(np.sum(~pred & truth)), 1)


def search(
    segs: list[np.ndarray], runs: list[tuple[np.ndarray, np.ndarray, int]], calibration: int
) -> tuple[float, dict[str, object]]:
    """Best (F1, setting) over the grid on the synthetic runs."""
    truth = np.concatenate([labels[cal:] for _, labels, cal in runs])
    best: tuple[float, dict[str, object]] = (-1.0, {})
    for smooth, alpha in itertools.product((False, True), GRID_ALPHA):
        learnt = estimate_extra(segs, calibration, alpha, smooth)
        for var, use_extra in itertools.product(GRID_VAR, (True, False)):
            extra = learnt if use_extra else np.zeros_like(learnt)
            ratio = np.concatenate(
                [
                    scores_after_calibration(
                        PumpMonitor(var_explained=var, ema_alpha=alpha, smooth_input=smooth, extra=extra),
                        v,
                        cal,
                    )
                    for v, _, cal in runs
                ]
            )
            for margin in GRID_MARGIN:
                score = f1(ratio > margin, truth)
                if score > best[0]:
                    best = (score, {"var_explained": var, "ema_alpha": alpha, "margin": margin,
                                        "smooth_input": smooth, "extra": extra})
    return best


def control_chart_model(calibration: int, p_value: float = 0.999) -> dict[str, np.ndarray]:
    """The published recipe's constants: F quantiles for every possible number of
    components (the device has no scipy), the normal quantile, 85 % variance, median of 5."""
    from scipy import stats  # training time only

    grid = np.linspace(0, 15, 10000)  # SKAB's code takes quantiles on this grid
    quantiles = np.zeros(PumpMonitorChannels + 1)
    for m in range(1, PumpMonitorChannels + 1):
        below = grid[stats.f.cdf(grid, m, calibration - m) < p_value]
        quantiles[m] = below[-1]
    q_normal = grid[stats.norm.cdf(grid) < p_value][-1]
    return {
        "method": np.int8(0),
        "calibration_frames": np.int32(calibration),
        "explained_variance": np.float64(0.85),
        "window": np.int32(5),
        "t2_quantiles": quantiles,
        "q_normal_quantile": np.float64(q_normal),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=pathlib.Path, default=None, help="SKAB folder")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "model.npz")
    parser.add_argument(
        "--method",
        choices=("control-chart", "ewma"),
        default="control-chart",
        help="control-chart: the published T²+Q recipe (default); ewma: the searched smoother",
    )
    args = parser.parse_args(argv)
    calibration = skab.TRAIN_ROWS
    if args.method == "control-chart":
        model = control_chart_model(calibration)
        np.savez(args.out, **model)
        print(f"control chart: F quantiles {np.round(model['t2_quantiles'][1:], 3)}, "
              f"normal quantile {float(model['q_normal_quantile']):.3f}")
        print(f"wrote {args.out}")
        return
    # The device sees float32 frames: train on exactly those values.
    normal = skab.anomaly_free(args.data).values.astype(np.float32).astype(np.float64)
    segs = segments(normal)
    # Starts of the labelled runs: their training rows only (the protocol's training split),
    # and only runs whose training rows are labelled normal throughout.
    starts = [
        run.values[:calibration].astype(np.float32).astype(np.float64)
        for run in skab.labelled_runs(args.data)
        if run.anomaly is not None and not run.anomaly[:calibration].any()
    ]
    pieces = [(seg, calibration) for seg in segs] + [(s, calibration // 2) for s in starts]
    spread = np.std(normal, axis=0)
    runs = inject_faults(pieces, spread, np.random.default_rng(SEED))
    best_f1, setting = search(segs, runs, calibration)
    np.savez(
        args.out,
        method=np.int8(1),
        calibration_frames=np.int32(calibration),
        var_explained=np.float32(setting["var_explained"]),
        ema_alpha=np.float32(setting["ema_alpha"]),
        margin=np.float32(setting["margin"]),
        smooth_input=np.int8(setting["smooth_input"]),
        extra=np.asarray(setting["extra"], dtype=np.float32),
    )
    print(f"{len(segs)} anomaly-free segments + {len(starts)} run starts, {len(runs)} synthetic fault runs")
    shown = {k: v for k, v in setting.items() if k != "extra"}
    extra = np.asarray(setting["extra"])
    print(f"chosen: {shown}; F1 on synthetic faults {best_f1:.3f}")
    print("extra variance per sensor:", " ".join(f"{c}={v:.3f}" for c, v in zip(skab.SENSOR_COLUMNS, extra)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
