"""SKAB's outlier-detection protocol, and a per-run row monitor chosen without its labels.

The protocol (``../shared/data/README.md``): for each of the 34 labelled runs the first
400 rows train and the rest test; a detector is fitted per run on its training rows; the
test rows of all runs are concatenated and scored against ``anomaly`` (F1, false-alarm
rate FAR = FP/(FP+TN), missed-alarm rate MAR = FN/(FN+TP)).

The monitor (:class:`RowMonitor`, small enough for a microcontroller to fit on itself):
standardise the rows of the channels kept (optionally dropping channels that trend
within the training rows: they will leave any range learnt there), Hotelling's T² /
Mahalanobis distance of each row to the training rows (ridge-regularised covariance),
an EWMA of that distance, and an alarm when the EWMA exceeds ``multiplier`` times its
largest value on the training rows.

**Selection rule (no SKAB test labels, stated before the one evaluation):**
:func:`select` scores every setting of :data:`GRID` on pseudo-runs cut from
``anomaly-free/anomaly-free.csv`` only (the recording with no faults; it is not one of
the 34 protocol runs): chunks of 1,150 rows, the first 400 train, the rest test, with a
synthetic collective fault INJECTED into test rows 200-499 of each chunk (a step of two
training standard deviations on two channels picked by a seeded generator). The setting
with the highest F1 over the pseudo-runs wins (ties: the earlier in :data:`GRID`). The
34 runs' labels are used once, to report the chosen setting's F1/FAR/MAR.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyward.detect.errors import DetectMisuse
from tinyward.detect.sensorfeatures import SKAB_CHANNELS, read_sensor_csv, resolution

TRAIN_ROWS = 400

#: Published outlier-task leaderboard on this protocol (SKAB README): F1, FAR %, MAR %.
LEADERBOARD: tuple[tuple[str, float, float | None, float | None], ...] = (
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T²+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T²", 0.66, 19.21, 42.6),
    ("LSTM-VAE", 0.56, None, None),
    ("Vanilla LSTM", 0.54, None, None),
    ("Vanilla AE", 0.39, None, None),
    ("Isolation Forest", 0.29, 2.56, 82.89),
)


@dataclass(frozen=True)
class MonitorParams:
    drop_trending: bool = False  # drop channels whose training rows trend (R² > 0.5)
    halflife: float = 1.0  # rows: EWMA of the distance (1 row: weight 0.5)
    multiplier: float = 1.0  # alarm above this times the largest training EWMA


#: Settings :func:`select` chooses among, in tie-break order.
GRID: tuple[MonitorParams, ...] = tuple(
    MonitorParams(d, h, m)
    for d, h, m in itertools.product((False, True), (1.0, 4.0, 16.0, 64.0),
                                     (1.0, 1.5, 2.0, 3.0, 5.0))
)


class RowMonitor:
    """Per-run monitor on raw rows (see the module docstring). State after fit, for c
    kept channels: mean c, scale c, inverse covariance c x c, limit 1, EWMA 1."""

    def __init__(self, params: MonitorParams) -> None:
        self.params = params

    def fit(self, rows: np.ndarray) -> RowMonitor:
        """Raises DetectMisuse: fewer than 20 rows or every channel constant."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or len(rows) < 20:
            raise DetectMisuse("need at least 20 training rows")
        quantum = np.array([resolution(rows[:, i]) for i in range(rows.shape[1])])
        keep = quantum > 0
        if self.params.drop_trending:
            t = np.arange(len(rows)) - (len(rows) - 1) / 2.0
            for i in np.flatnonzero(keep):
                column = rows[:, i] - rows[:, i].mean()
                slope = (t @ column) / (t @ t)
                r2 = (slope * slope * (t @ t)) / max(column @ column, 1e-300)
                if r2 > 0.5:
                    keep[i] = False
            if not keep.any():
                keep = quantum > 0
        if not keep.any():
            raise DetectMisuse("every channel is constant in the training rows")
        self.keep = keep
        x = rows[:, keep]
        self.mean = x.mean(axis=0)
        self.scale = np.maximum(x.std(axis=0), quantum[keep] / np.sqrt(12.0))
        z = (x - self.mean) / self.scale
        cov = np.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1])
        ridge = 1e-3 * max(float(np.trace(cov)) / len(cov), 1e-12)
        self.inverse = np.linalg.inv(cov + ridge * np.eye(len(cov)))
        self.ewma: float | None = None
        self.limit = np.inf
        self.limit = float(np.max(self.score(rows))) * self.params.multiplier
        self.ewma = None
        return self

    def score(self, rows: np.ndarray) -> np.ndarray:
        """The EWMA of the Mahalanobis distance, row by row (continues the state)."""
        z = (np.asarray(rows, dtype=np.float64)[:, self.keep] - self.mean) / self.scale
        distance = np.sqrt(np.einsum("ij,jk,ik->i", z, self.inverse, z))
        weight = 1.0 - 2.0 ** (-1.0 / self.params.halflife)
        out = np.empty(len(distance))
        level = self.ewma if self.ewma is not None else (distance[0] if len(distance) else 0.0)
        for i, d in enumerate(distance):
            level = level + weight * (d - level)
            out[i] = level
        self.ewma = level
        return out

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.score(rows) > self.limit

    def state_floats(self) -> int:
        c = int(self.keep.sum())
        return 2 * c + c * c + 2

    def ops_per_row(self) -> int:
        """Subtract and multiply per channel (2c), the quadratic form (c² + c multiply-
        adds), a square root, the EWMA (2) and the compare (1)."""
        c = int(self.keep.sum())
        return 2 * c + c * c + c + 1 + 2 + 1


@dataclass(frozen=True)
class Result:
    f1: float
    far: float  # percent
    mar: float  # percent
    tp: int
    fp: int
    fn: int
    tn: int


def binary_scores(pred: np.ndarray, truth: np.ndarray) -> Result:
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    tp = int(np.sum(pred & truth))
    fp = int(np.sum(pred & ~truth))
    fn = int(np.sum(~pred & truth))
    tn = int(np.sum(~pred & ~truth))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    far = 100.0 * fp / (fp + tn) if fp + tn else 0.0
    mar = 100.0 * fn / (fn + tp) if fn + tp else 0.0
    return Result(f1, far, mar, tp, fp, fn, tn)


def run_files(skab: Path) -> list[Path]:
    """The 34 labelled runs of the protocol (valve1/, valve2/, other/), in a fixed order."""
    return sorted(p for folder in ("valve1", "valve2", "other")
                  for p in (Path(skab) / folder).glob("*.csv"))


def _protocol(runs: list[tuple[np.ndarray, np.ndarray]], params: MonitorParams) -> Result:
    predictions, truth = [], []
    for values, labels in runs:
        monitor = RowMonitor(params).fit(values[:TRAIN_ROWS])
        predictions.append(monitor.predict(values[TRAIN_ROWS:]))
        truth.append(labels[TRAIN_ROWS:] > 0)
    return binary_scores(np.concatenate(predictions), np.concatenate(truth))


def pseudo_runs(
    skab: Path, *, length: int = 1150, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Chunks of anomaly-free.csv with a synthetic collective fault INJECTED into test
    rows 200-499 of each: +-2 training stds on two seeded channels."""
    values = read_sensor_csv(Path(skab) / "anomaly-free" / "anomaly-free.csv").values
    rng = np.random.default_rng(seed)
    runs = []
    for start in range(0, len(values) - length + 1, length):
        chunk = values[start : start + length].copy()
        labels = np.zeros(length)
        channels = rng.choice(chunk.shape[1], size=2, replace=False)
        std = chunk[:TRAIN_ROWS].std(axis=0)
        fault = slice(TRAIN_ROWS + 200, TRAIN_ROWS + 500)
        for ch in channels:
            chunk[fault, ch] += rng.choice([-1.0, 1.0]) * 2.0 * std[ch]
        labels[fault] = 1
        runs.append((chunk, labels))
    return runs


def select(skab: Path) -> tuple[MonitorParams, list[tuple[MonitorParams, Result]]]:
    """The selection rule of the module docstring: best pseudo-run F1 over :data:`GRID`."""
    runs = pseudo_runs(skab)
    table = [(params, _protocol(runs, params)) for params in GRID]
    best = max(range(len(table)), key=lambda i: (table[i][1].f1, -i))
    return table[best][0], table


def evaluate(skab: Path, params: MonitorParams) -> tuple[Result, dict[str, Result]]:
    """The protocol on the 34 runs: overall and per folder."""
    runs = []
    folders: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for path in run_files(skab):
        table = read_sensor_csv(path, SKAB_CHANNELS)
        if table.labels is None:
            raise DetectMisuse(f"{path}: no 'anomaly' column: not a SKAB run")
        runs.append((table.values, table.labels))
        folders.setdefault(path.parent.name, []).append(runs[-1])
    return _protocol(runs, params), {k: _protocol(v, params) for k, v in folders.items()}
