"""SKAB's outlier-detection protocol, and a per-run row monitor chosen without its labels.

The protocol (``../shared/data/README.md``): for each of the 34 labelled runs the first
400 rows train and the rest test; a detector is fitted per run on its training rows; the
test rows of all runs are concatenated and scored against ``anomaly`` (F1, false-alarm
rate FAR = FP/(FP+TN), missed-alarm rate MAR = FN/(FN+TP)).

The monitor (:class:`RowMonitor`, small enough for a microcontroller to fit on itself
from its own 400 rows):

* standardise the rows of the channels kept (optionally dropping channels that trend
  within the fit rows: they will leave any range learnt there);
* a covariance of the standardised fit rows (ridge 1e-3 of the mean variance), to whose
  diagonal ``wander`` optionally adds the drift each channel may make over that many
  rows as a random walk, estimated from the fit rows' 50-row block means (slow channels
  such as vibration RMS wander beyond what 400 rows show);
* a distance per row: Hotelling's T² / Mahalanobis distance to the fit rows
  (``model="mahal"``), or PCA T² on the components that explain 90 % of the variance
  together with Q (SPE, the residual off those components), each divided by its largest
  value on the fit rows, the larger of the two (``model="pca"``);
* an EWMA of the distance (``halflife`` rows);
* a limit: ``multiplier`` times the largest EWMA on the training rows themselves
  (``calibrate="in"``: fit and limit on all 400), or on the *later* 100 training rows
  scored by a model fitted on the earlier 300 (``calibrate="later"``: out-of-sample, as
  test rows will be; :mod:`tinyward.detect.threshold`'s contiguous-later rule);
* an alarm while the EWMA is above the limit, held for ``hold`` rows after the last
  exceedance (SKAB's faults are collective: long stretches).

**Selection rule (no SKAB test labels; stated and committed before the one evaluation
of this grid):** :func:`select` scores every setting of :data:`GRID` on pseudo-runs cut
from ``anomaly-free/anomaly-free.csv`` only (the recording with no faults; not one of the
34 protocol runs): chunks of 1,150 rows every 575 rows (15 chunks), the first 400 train,
the rest test; into test rows 200-499 of each chunk each of the five fault kinds of
:data:`FAULTS` is INJECTED in turn (75 pseudo-runs), modelled on the fault types SKAB
documents (valve closures, cavitation, rotor imbalance, leaks) with sizes in training
standard deviations fixed before any result was seen. The setting with the highest
pooled F1 over the pseudo-runs wins (ties: the earlier in :data:`GRID`). The 34 runs'
labels are used once, to report the chosen setting's F1/FAR/MAR.

History (disclosed): a first grid (drop trending x half-life x multiplier, in-sample
limit, one synthetic fault kind, 8 pseudo-runs) chose ``drop_trending=True,
halflife=1, multiplier=1``; its one evaluation gave F1 0.766, FAR 39.6 %, MAR 16.6 %.
This grid (which contains that setting) was designed knowing that figure, the published
leaderboard, the share of anomalous test rows (53.7 %, in the first test) and that the
first monitor's false-alarm rate was high. While designing it, only pseudo-run results
were looked at: a drift-tracking mean (updated on rows within the fit rows' largest
distance, half-life 200 or 1,000 rows; gated or not) did not raise the pseudo-run F1 and
was left out; on clean pseudo-run test rows 69 % of false alarms came from the two
accelerometer channels (hence ``wander``). The pseudo-run fault window (300 of 750 test
rows) and fault sizes were not changed to match the 53.7 %. The rule was committed
before this grid was evaluated on the 34 runs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.signal import lfilter

from tinyward.detect.errors import DetectMisuse
from tinyward.detect.sensorfeatures import SKAB_CHANNELS, read_sensor_csv, resolution

TRAIN_ROWS = 400
#: Block length (rows) for the wander estimate: the spread of adjacent block means.
WANDER_BLOCK = 50
#: With ``calibrate="later"`` the model is fitted on the earlier rows and the limit set
#: on the last ``CALIBRATION_ROWS`` training rows.
CALIBRATION_ROWS = 100
#: ``model="pca"`` keeps the fewest components that explain this share of the variance.
PCA_VARIANCE = 0.90

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
    drop_trending: bool = False  # drop channels whose fit rows trend (R² > 0.5)
    halflife: float = 1.0  # rows: EWMA of the distance (1 row: weight 0.5)
    multiplier: float = 1.0  # alarm above this times the largest calibration EWMA
    model: Literal["mahal", "pca"] = "mahal"
    calibrate: Literal["in", "later"] = "in"
    hold: int = 0  # rows an alarm is held after the last exceedance
    wander: float = 0.0  # rows: horizon of the slow drift added to the covariance


#: Settings :func:`select` chooses among, in tie-break order (the first grid's settings
#: are those with model="mahal", calibrate="in", hold=0).
GRID: tuple[MonitorParams, ...] = tuple(
    MonitorParams(d, h, m, model, cal, hold, wander)
    for wander, model, cal, hold, d, h, m in itertools.product(
        (0.0, 200.0, 800.0), ("mahal", "pca"), ("in", "later"), (0, 30, 120),
        (False, True), (1.0, 4.0, 16.0, 64.0), (1.0, 1.25, 1.5, 2.0, 3.0))
)


def _trending(rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
    t = np.arange(len(rows)) - (len(rows) - 1) / 2.0
    out = keep.copy()
    for i in np.flatnonzero(keep):
        column = rows[:, i] - rows[:, i].mean()
        slope = (t @ column) / (t @ t)
        r2 = (slope * slope * (t @ t)) / max(column @ column, 1e-300)
        if r2 > 0.5:
            out[i] = False
    return out if out.any() else keep


class RowMonitor:
    """Per-run monitor on raw rows (see the module docstring). State after fit, for c
    kept channels: mean c, scale c, inverse covariance c x c (``mahal``) or k components
    c x k, k eigenvalues and 2 normalisers (``pca``), limit 1, EWMA 1, hold counter 1."""

    def __init__(self, params: MonitorParams) -> None:
        self.params = params

    def fit(self, rows: np.ndarray) -> RowMonitor:
        """Raises DetectMisuse: fewer than 20 rows (200 with calibrate="later") or every
        channel constant."""
        rows = np.asarray(rows, dtype=np.float64)
        later = self.params.calibrate == "later"
        if rows.ndim != 2 or len(rows) < (20 + CALIBRATION_ROWS if later else 20):
            raise DetectMisuse(f"need at least {20 + CALIBRATION_ROWS if later else 20} "
                               "training rows")
        fit_rows = rows[: len(rows) - CALIBRATION_ROWS] if later else rows
        quantum = np.array([resolution(fit_rows[:, i]) for i in range(rows.shape[1])])
        keep = quantum > 0
        if not keep.any():
            raise DetectMisuse("every channel is constant in the training rows")
        if self.params.drop_trending:
            keep = _trending(fit_rows, keep)
        self.keep = keep
        x = fit_rows[:, keep]
        self.mean = x.mean(axis=0)
        self.scale = np.maximum(x.std(axis=0), quantum[keep] / np.sqrt(12.0))
        z = (x - self.mean) / self.scale
        c = z.shape[1]
        cov = np.cov(z, rowvar=False).reshape(c, c)
        ridge = 1e-3 * max(float(np.trace(cov)) / c, 1e-12)
        cov = cov + ridge * np.eye(c) + np.diag(self._wander(z))
        if self.params.model == "mahal":
            self.inverse = np.linalg.inv(cov)
        else:
            eigenvalues, vectors = np.linalg.eigh(cov)
            order = np.argsort(eigenvalues)[::-1]
            eigenvalues, vectors = eigenvalues[order], vectors[:, order]
            share = np.cumsum(eigenvalues) / eigenvalues.sum()
            k = int(np.searchsorted(share, PCA_VARIANCE) + 1)
            self.components, self.eigenvalues = vectors[:, :k], eigenvalues[:k]
            self.norm_t = self.norm_q = 1.0
            t2, q = self._t2_q(fit_rows)
            self.norm_t = max(float(np.sqrt(t2.max())), 1e-12)
            self.norm_q = max(float(np.sqrt(q.max())), 1e-12)
        self.warm = self.distance(fit_rows) if later else np.empty(0)
        self.calibration = self.distance(rows[len(fit_rows) - len(rows):] if later else rows)
        self.limit = limit_from(self.warm, self.calibration, self.params.halflife) \
            * self.params.multiplier
        self.ewma: float | None = None
        self.run = 0
        return self

    def _t2_q(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = (rows[:, self.keep] - self.mean) / self.scale
        projection = z @ self.components
        t2 = np.sum(projection**2 / self.eigenvalues, axis=1)
        q = np.sum((z - projection @ self.components.T) ** 2, axis=1)
        return t2, q

    def _distance_z(self, z: np.ndarray) -> np.ndarray:
        if self.params.model == "mahal":
            return np.asarray(np.sqrt(np.einsum("ij,jk,ik->i", z, self.inverse, z)))
        projection = z @ self.components
        t2 = np.sum(projection**2 / self.eigenvalues, axis=1)
        q = np.sum((z - projection @ self.components.T) ** 2, axis=1)
        return np.asarray(np.maximum(np.sqrt(t2) / self.norm_t, np.sqrt(q) / self.norm_q))

    def distance(self, rows: np.ndarray) -> np.ndarray:
        x = np.asarray(rows, dtype=np.float64)[:, self.keep]
        return self._distance_z((x - self.mean) / self.scale)

    def _wander(self, z: np.ndarray) -> np.ndarray:
        """Variance (standardised units) a channel may drift over ``wander`` rows, as a
        random walk: adjacent means of WANDER_BLOCK-row blocks differ by about
        sqrt(block) step sizes, so the drift over H rows is about sqrt(H / block) times
        their spread. Slow channels (vibration RMS, temperatures) wander beyond what 400
        rows show; added to the covariance's diagonal (scaling alone would not change a
        Mahalanobis distance)."""
        if not self.params.wander:
            return np.zeros(z.shape[1])
        blocks = len(z) // WANDER_BLOCK
        means = z[: blocks * WANDER_BLOCK].reshape(blocks, WANDER_BLOCK, -1).mean(axis=1)
        steps = np.diff(means, axis=0)
        return np.asarray((self.params.wander / WANDER_BLOCK) * np.mean(steps**2, axis=0))

    def score(self, rows: np.ndarray) -> np.ndarray:
        """The EWMA of the distance, row by row (continues the state)."""
        out = ewma(self.distance(rows), self.params.halflife, self.ewma)
        if len(out):
            self.ewma = float(out[-1])
        return out

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Alarms: EWMA above the limit, held ``hold`` rows after the last exceedance."""
        out, self.run = held(self.score(rows) > self.limit, self.params.hold, self.run)
        return out

    def state_floats(self) -> int:
        """Numbers kept while scoring (the wander and calibration are fit-time only)."""
        k = self.components.shape[1] if self.params.model == "pca" else 0
        return state_floats(self.params.model, int(self.keep.sum()), k)

    def ops_per_row(self) -> int:
        k = self.components.shape[1] if self.params.model == "pca" else 0
        return ops_per_row(self.params.model, int(self.keep.sum()), k)


def state_floats(model: str, c: int, k: int = 0) -> int:
    """Scoring state for c kept channels (k PCA components): ``mahal`` mean c, scale c,
    inverse covariance c², limit, EWMA, hold counter; ``pca`` the c x k components, k
    eigenvalues and the two normalisers instead of the inverse."""
    if model == "mahal":
        return 2 * c + c * c + 3
    return 2 * c + c * k + k + 2 + 3


def ops_per_row(model: str, c: int, k: int = 0) -> int:
    """``mahal``: subtract and multiply per channel (2c), the quadratic form (c² + c
    multiply-adds), a square root, the EWMA (2), the compare and the hold (2).
    ``pca``: 2c, projection (c·k), T² (2k), reconstruction and residual (c·k + 2c), two
    square roots, two divides, a max, EWMA 2, compare and hold 2."""
    if model == "mahal":
        return 2 * c + c * c + c + 1 + 2 + 2
    return 2 * c + c * k + 2 * k + c * k + 2 * c + 2 + 2 + 1 + 2 + 2


def ewma(distance: np.ndarray, halflife: float, start: float | None = None) -> np.ndarray:
    """y[i] = (1 - w) y[i-1] + w d[i], w = 1 - 2^(-1/halflife), from ``start`` (or d[0])."""
    if not len(distance):
        return np.asarray(distance, dtype=np.float64)
    weight = 1.0 - 2.0 ** (-1.0 / halflife)
    level = float(distance[0]) if start is None else start
    out, _ = lfilter([weight], [1.0, weight - 1.0], distance, zi=[(1.0 - weight) * level])
    return np.asarray(out)


def limit_from(warm: np.ndarray, calibration: np.ndarray, halflife: float) -> float:
    """The largest EWMA over the calibration distances, the EWMA warmed up on ``warm``."""
    both = np.concatenate([warm, calibration])
    return float(np.max(ewma(both, halflife)[len(warm):]))


def held(above: np.ndarray, hold: int, run: int = 0) -> tuple[np.ndarray, int]:
    """Alarm at row i when some row in [i - hold, i] is above; ``run`` carries the state
    between calls (rows of alarm left, 0 when none). Returns the alarms and the new run."""
    i = np.arange(len(above))
    last = np.where(above, i, run - hold - 1)  # a carried alarm is an exceedance before 0
    last = np.maximum.accumulate(last) if len(last) else last
    out = i - last <= hold
    if len(above):
        run = max(int(last[-1]) + hold + 1 - len(above), 0)
    return out, run


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


# Channel indices in SKAB_CHANNELS order.
_ACC1, _ACC2, _CURRENT, _PRESSURE, _TEMP, _THERMO, _VOLTAGE, _FLOW = range(8)

#: Synthetic fault kinds INJECTED into pseudo-runs, in training standard deviations sd
#: (fixed before any result was seen; modelled on SKAB's documented fault types).
FAULTS: tuple[str, ...] = ("step", "valve", "cavitation", "imbalance", "leak")


def inject(chunk: np.ndarray, kind: str, fault: slice, std: np.ndarray,
           rng: np.random.Generator) -> None:
    """Add one fault of ``kind`` to ``chunk[fault]`` in place.

    step: ±2sd on two random channels (the first grid's fault). valve (a closure): pressure
    +3sd, flow -3sd, current -1sd. cavitation: vibration noise of 2sd on both accelerometers
    and 1sd on flow. imbalance: both accelerometers +2sd, current +1sd. leak: a ramp from 0
    to -4sd on pressure and -2sd on flow across the fault.
    """
    n = fault.stop - fault.start
    if kind == "step":
        for ch in rng.choice(chunk.shape[1], size=2, replace=False):
            chunk[fault, ch] += rng.choice([-1.0, 1.0]) * 2.0 * std[ch]
    elif kind == "valve":
        chunk[fault, _PRESSURE] += 3.0 * std[_PRESSURE]
        chunk[fault, _FLOW] -= 3.0 * std[_FLOW]
        chunk[fault, _CURRENT] -= 1.0 * std[_CURRENT]
    elif kind == "cavitation":
        for ch, size in ((_ACC1, 2.0), (_ACC2, 2.0), (_FLOW, 1.0)):
            chunk[fault, ch] += rng.normal(0.0, size * std[ch], n)
    elif kind == "imbalance":
        for ch, size in ((_ACC1, 2.0), (_ACC2, 2.0), (_CURRENT, 1.0)):
            chunk[fault, ch] += size * std[ch]
    elif kind == "leak":
        ramp = np.linspace(0.0, 1.0, n)
        chunk[fault, _PRESSURE] -= 4.0 * std[_PRESSURE] * ramp
        chunk[fault, _FLOW] -= 2.0 * std[_FLOW] * ramp
    else:
        raise DetectMisuse(f"unknown fault kind {kind!r}")


def pseudo_runs(
    skab: Path, *, length: int = 1150, stride: int = 575, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Chunks of anomaly-free.csv (``length`` rows every ``stride``), each with every
    fault kind of :data:`FAULTS` INJECTED in turn into test rows 200-499."""
    values = read_sensor_csv(Path(skab) / "anomaly-free" / "anomaly-free.csv").values
    rng = np.random.default_rng(seed)
    fault = slice(TRAIN_ROWS + 200, TRAIN_ROWS + 500)
    runs = []
    for start in range(0, len(values) - length + 1, stride):
        base = values[start : start + length]
        std = base[:TRAIN_ROWS].std(axis=0)
        for kind in FAULTS:
            chunk = base.copy()
            inject(chunk, kind, fault, std, rng)
            labels = np.zeros(length)
            labels[fault] = 1
            runs.append((chunk, labels))
    return runs


def select(skab: Path) -> tuple[MonitorParams, list[tuple[MonitorParams, Result]]]:
    """The selection rule of the module docstring: best pooled pseudo-run F1 over
    :data:`GRID` (ties: the earlier setting). Each run is fitted and scored once per
    (model, calibrate, drop_trending, halflife); the limit scales with ``multiplier``
    and ``hold`` only holds alarms, so every setting's alarms equal
    ``RowMonitor(setting).fit(...).predict(...)`` (a test checks it)."""
    runs = pseudo_runs(skab)
    truth = np.concatenate([labels[TRAIN_ROWS:] > 0 for _, labels in runs])
    fitted: dict[tuple[object, ...], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    scored: dict[tuple[object, ...], list[tuple[np.ndarray, float]]] = {}
    table = []
    for params in GRID:
        key = (params.model, params.calibrate, params.drop_trending, params.wander)
        if key not in fitted:  # distances do not depend on halflife, multiplier, hold
            plain = MonitorParams(params.drop_trending, 1.0, 1.0, params.model,
                                  params.calibrate, 0, params.wander)
            fitted[key] = []
            for values, _ in runs:
                monitor = RowMonitor(plain).fit(values[:TRAIN_ROWS])
                fitted[key].append((monitor.warm, monitor.calibration,
                                    monitor.distance(values[TRAIN_ROWS:])))
        base = (*key, params.halflife)
        if base not in scored:
            scored[base] = [(ewma(test, params.halflife), limit_from(warm, cal, params.halflife))
                            for warm, cal, test in fitted[key]]
        pred = np.concatenate([held(score > limit * params.multiplier, params.hold)[0]
                               for score, limit in scored[base]])
        table.append((params, binary_scores(pred, truth)))
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
