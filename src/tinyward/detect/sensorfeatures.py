"""Windowed features over multichannel sensor streams, including tampering signals.

A sensor can be attacked without touching the network: its value frozen, an earlier
stretch replayed, a bias or drift added, spikes injected, its noise changed. Each window
of ``window`` samples (every ``step`` samples) gives one vector:

- per channel: level (window mean, standardised on benign data), log spread (window
  standard deviation over the benign one) and the mean cross-channel residual (the
  channel minus a linear fit on the other channels, learnt on benign data: a bias on one
  channel breaks its relation to the others even when its level stays plausible);
- tampering signals over all channels: the largest fraction of repeated values
  (stuck/frozen), the closeness of the window to any earlier stretch of the stream
  (replay: ``-log`` of the smallest mean absolute difference against a history ring
  buffer, which an exact replay drives towards the floor), the largest isolated
  excursion (a jump that comes straight back, in units of benign's 99.9th percentile:
  spikes), the largest change of the
  noise floor (log ratio of the median absolute first difference), and the largest
  change of level since the previous window (drift, abrupt bias).

Four more scalars watch for small, sustained or sparse tampering on ONE channel, each
normalised by a *local* scale that the stream learns as it goes (bounded state: a few
floats per channel), so that "3 sigma" means the channel's own recent noise rather than
its spread over every operating point:

- ``shift_max``: the largest ``|window mean - slow baseline| / local std`` over channels,
  in units of its benign robust spread (1.4826 x MAD on the training windows);
- ``shift_cusum`` and ``residual_cusum``: two-sided, leaky Page CUSUMs
  (``S = max(0, (1 - a) S + x - k)``: ``a`` the baseline's step, ``x`` centred on
  benign's median, ``k = 0.5`` benign robust spreads, the textbook choice for a
  one-spread shift) of that standardised level deviation and of the cross-channel
  residual's, largest over channels; a bias or a drift accumulates here;
- ``spike_local``: the largest isolated excursion in the window over the channel's
  *local* std, in units of benign's 99.9th percentile of that ratio (per channel).

Three more condense the per-channel groups: ``level_dev_max``, ``spread_max`` and
``residual_dev_max``, the channel furthest from benign's median in benign robust
spreads. By default (``per_channel=False``) they *replace* the 3 x channels per-channel
features: 12 features for SKAB instead of 36. All are ``log1p``-compressed. Their benign
scales and the spike threshold are learnt in a first pass over the benign streams in
:meth:`SensorFeatureExtractor.fit`.

The extractor holds state between calls (the previous window, the replay history), so
a stream scored after :meth:`SensorFeatureExtractor.fit` continues from the benign data,
just as the packet features do. CSV reading is in :func:`read_sensor_csv`, whose errors
name the file, line and column.
"""

from __future__ import annotations

import copy
import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyward.detect.errors import CsvError, DetectMisuse

SKAB_CHANNELS: tuple[str, ...] = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)


@dataclass
class SensorTable:
    """Rows of a sensor CSV: ``values`` is (n, channels); ``labels`` the ``anomaly``
    column when present (else None)."""

    path: str
    channels: tuple[str, ...]
    values: np.ndarray
    labels: np.ndarray | None


def read_sensor_csv(
    path: Path | str,
    channels: Sequence[str] = SKAB_CHANNELS,
    *,
    delimiter: str = ";",
    label_column: str = "anomaly",
) -> SensorTable:
    """Read the named numeric columns of a delimited file.

    Raises:
        CsvError: the file cannot be read, a column is missing, a cell is not a finite
            number, a row is short, or there are no rows. Its ``partial`` holds the rows
            read before the problem.
    """
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as error:
        raise CsvError(path, f"cannot open: {error.strerror}", line=0) from error
    rows: list[list[float]] = []
    labels: list[float] = []
    with handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise CsvError(path, "empty file: no header row", line=1) from None
        except (csv.Error, UnicodeDecodeError) as error:
            raise CsvError(path, f"unreadable header: {error}", line=1) from None
        if not any(header):
            raise CsvError(path, "empty file: no header row", line=1)
        missing = [name for name in channels if name not in header]
        if missing:
            raise CsvError(
                path,
                f"missing column(s) {', '.join(map(repr, missing))}; the header has "
                f"{', '.join(map(repr, header))} (delimiter {delimiter!r})",
                line=1,
                column=missing[0],
            )
        index = [header.index(name) for name in channels]
        label_index = header.index(label_column) if label_column in header else None
        line = 1
        try:
            for line, row in enumerate(reader, start=2):
                if not row or all(not cell.strip() for cell in row):
                    continue
                values = []
                for name, i in zip(channels, index, strict=True):
                    values.append(_cell(path, row, i, line, name, rows))
                if label_index is not None:
                    labels.append(_cell(path, row, label_index, line, label_column, rows))
                rows.append(values)
        except (csv.Error, UnicodeDecodeError) as error:
            raise CsvError(path, f"unreadable row: {error}", line=line + 1, partial=rows) from None
    if not rows:
        raise CsvError(path, "no data rows after the header", line=2)
    return SensorTable(
        str(path),
        tuple(channels),
        np.asarray(rows, dtype=np.float64),
        np.asarray(labels, dtype=np.float64) if label_index is not None else None,
    )


def _cell(
    path: Path, row: list[str], i: int, line: int, name: str, rows: list[list[float]]
) -> float:
    if i >= len(row):
        raise CsvError(
            path,
            f"row has {len(row)} cells, no value for this column",
            line=line,
            column=name,
            partial=rows,
        )
    text = row[i].strip()
    try:
        value = float(text)
    except ValueError:
        raise CsvError(
            path, f"not a number: {text!r}", line=line, column=name, partial=rows
        ) from None
    if not np.isfinite(value):
        raise CsvError(path, f"not a finite number: {text!r}", line=line, column=name, partial=rows)
    return value


@dataclass(frozen=True)
class SensorFeatureConfig:
    window: int = 30  # samples per window (30 s at SKAB's 1 Hz)
    step: int = 10
    history: int = 900  # samples (15 min at 1 Hz) kept to recognise a replayed stretch
    min_replay_lag: int = 60  # lags shorter than this overlap the window itself
    baseline_halflife: int = 60  # windows (600 s at step 10): the slow baseline of levels
    # Also emit the 3 x channels per-channel features (level, spread, residual) rather
    # than only their largest standardised value. Off by default: chosen on injections
    # into a split of the TRAINING streams (mean AUC over the six kinds, Mahalanobis:
    # 0.825 with the 12 scalars vs 0.816 with all 36), never on the test streams.
    per_channel: bool = False

    def __post_init__(self) -> None:
        # Also guards loading a saved state from a hostile file.
        for name, low, high in (
            ("window", 3, 10_000),
            ("step", 1, 10_000),
            ("history", 0, 1_000_000),
            ("min_replay_lag", 1, 1_000_000),
            ("baseline_halflife", 1, 1_000_000),
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and low <= value <= high):
                raise DetectMisuse(f"{name}={value!r} must be an integer in {low}..{high}")
        if not isinstance(self.per_channel, bool):
            raise DetectMisuse(f"per_channel={self.per_channel!r} must be true or false")
        if self.min_replay_lag < self.window:
            raise DetectMisuse("min_replay_lag must be at least the window")


class SensorFeatureExtractor:
    """Fit on benign samples, then turn streams into window feature vectors."""

    def __init__(self, channels: Sequence[str], config: SensorFeatureConfig | None = None) -> None:
        self.channels = tuple(channels)
        self.config = config or SensorFeatureConfig()
        c = len(self.channels)
        per_channel = (
            tuple(f"level_dev_{i}" for i in range(c))
            + tuple(f"spread_{i}" for i in range(c))
            + tuple(f"residual_dev_{i}" for i in range(c))
        )
        self.feature_names: tuple[str, ...] = (
            (per_channel if self.config.per_channel else ())
            + ("stuck", "replay", "spike", "noise_floor", "level_jump")
            + ("shift_max", "shift_cusum", "residual_cusum", "spike_local")
            + ("level_dev_max", "spread_max", "residual_dev_max")
        )
        self._fitted = False
        # Filled only during fit()'s first pass.
        self._calibration: dict[str, list[np.ndarray]] | None = None

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def copy(self) -> SensorFeatureExtractor:
        return copy.deepcopy(self)

    def fit(self, values: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Learn scales and the cross-channel fit on benign samples: one (n, channels)
        array, or a list of them recorded separately (runs at other operating points).
        Return the benign window features of every stream, each from a fresh stream
        state; afterwards the stream state continues after the last one.

        Raises:
            DetectMisuse: wrong shape or fewer than three windows of samples in a stream.
        """
        streams = [values] if isinstance(values, np.ndarray) else list(values)
        streams = [self._check(v) for v in streams]
        if not streams or any(len(v) < 3 * self.config.window for v in streams):
            raise DetectMisuse(f"need at least {3 * self.config.window} benign samples per stream")
        joined = np.vstack(streams)
        self.mean = joined.mean(axis=0)
        self.std = joined.std(axis=0) + 1e-9
        zs = [(v - self.mean) / self.std for v in streams]
        # Each channel as a linear function of the others, learnt on variation within a
        # stream (levels differ between runs; features use deviations from a baseline).
        centred = np.vstack([z - z.mean(axis=0) for z in zs])
        c = centred.shape[1]
        self.coef = np.zeros((c, c))
        self.intercept = np.zeros(c)
        for j in range(c):
            others = [k for k in range(c) if k != j]
            solution, *_ = np.linalg.lstsq(centred[:, others], centred[:, j], rcond=None)
            self.coef[j, others] = solution
        residual = centred - centred @ self.coef.T
        self.residual_std = residual.std(axis=0) + 1e-9
        diffs = np.vstack([np.abs(np.diff(z, axis=0)) for z in zs])
        self.noise_floor = np.median(diffs, axis=0) + 1e-6
        self.spike_scale = np.quantile(np.vstack([_spikiness(z) for z in zs]), 0.999, axis=0) + 1e-6
        w, step = self.config.window, self.config.step
        self.window_std = (
            np.median(
                np.stack(
                    [z[i : i + w].std(axis=0) for z in zs for i in range(0, len(z) - w, step)]
                ),
                axis=0,
            )
            + 1e-6
        )
        self._fitted = True
        # First pass with unit scales: collect the raw standardised shifts and spike
        # ratios of the benign windows, then fix their benign scales and threshold.
        c = len(self.channels)
        self.shift_center = np.zeros((2, c))
        self.shift_scale = np.ones((2, c))
        self.spike_threshold = np.full(c, np.inf)
        self.channel_center = np.zeros((3, c))
        self.channel_scale = np.ones((3, c))
        calibration: dict[str, list[np.ndarray]] = {"shift": [], "ratio": [], "channel": []}
        self._calibration = calibration
        for v in streams:
            self.reset_stream()
            self.transform(v)
        shifts = np.stack(calibration["shift"])  # (windows, 2, c)
        ratios = np.vstack(calibration["ratio"])  # (samples, c)
        self._calibration = None
        self.shift_center = np.median(shifts, axis=0)
        self.shift_scale = 1.4826 * np.median(np.abs(shifts - self.shift_center), axis=0) + 1e-6
        self.spike_threshold = np.quantile(ratios, 0.999, axis=0) + 1e-6
        per_channel = np.stack(calibration["channel"])  # (windows, 3, c)
        self.channel_center = np.median(per_channel, axis=0)
        self.channel_scale = (
            1.4826 * np.median(np.abs(per_channel - self.channel_center), axis=0) + 1e-6
        )
        rows = []
        for v in streams:
            self.reset_stream()
            rows.append(self.transform(v))
        return np.vstack(rows)

    def reset_stream(self) -> None:
        """Forget the stream (history, baselines): the next samples start a new one."""
        c = len(self.channels)
        self._history = np.zeros((0, c))
        self._pending = np.zeros((0, c))
        self._prev_level: np.ndarray | None = None
        self._baseline: np.ndarray | None = None  # (2, channels): level, residual
        # Local scales (window std of level and of residual; mean |first difference|)
        # and the CUSUMs (level +/-, residual +/-), all per channel.
        self._local: np.ndarray | None = None  # (3, channels)
        self._cusum = np.zeros((4, c))

    def _check(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.channels):
            raise DetectMisuse(f"expected (n, {len(self.channels)}) samples, got {values.shape}")
        return values

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Append samples to the stream; return one row per completed window.

        Window ``i`` of this call ends at sample ``window_ends[i]`` (relative to the
        samples passed), available afterwards as :attr:`last_window_ends`.
        """
        if not self._fitted:
            raise DetectMisuse("fit() must be called before transform()")
        values = self._check(values)
        z = (values - self.mean) / self.std
        cfg = self.config
        carried = len(self._pending)
        stream = np.vstack([self._pending, z])
        rows: list[np.ndarray] = []
        ends: list[int] = []
        start = 0
        while start + cfg.window <= len(stream):
            window = stream[start : start + cfg.window]
            rows.append(self._window_features(window, stream[:start]))
            ends.append(start + cfg.window - carried)
            start += cfg.step
        # Keep the tail that has not formed a window yet, and the replay history.
        consumed = stream[:start]
        self._history = np.vstack([self._history, consumed])[-cfg.history :]
        self._pending = stream[start:]
        self.last_window_ends = np.asarray(ends, dtype=np.int64)
        if not rows:
            return np.zeros((0, self.n_features))
        return np.vstack(rows)

    def _window_features(self, window: np.ndarray, before: np.ndarray) -> np.ndarray:
        cfg = self.config
        level = window.mean(axis=0)
        spread = np.log((window.std(axis=0) + 1e-6) / self.window_std)
        residual = (window - (window @ self.coef.T + self.intercept)) / self.residual_std
        diffs = np.abs(np.diff(window, axis=0))
        stuck = float(np.max(np.mean(diffs < 1e-9 * (1 + np.abs(window[1:])), axis=0)))
        spike = float(np.max(_spikiness(window) / self.spike_scale))
        noise = float(np.max(np.abs(np.log((np.median(diffs, axis=0) + 1e-6) / self.noise_floor))))
        jump = 0.0 if self._prev_level is None else float(np.max(np.abs(level - self._prev_level)))
        self._prev_level = level
        replay = self._replay_closeness(window, before)
        # Levels and residuals as deviations from their own slow baseline: a process
        # drifts over hours (benign), a bias or drift attack within minutes.
        current = np.stack([level, residual.mean(axis=0)])
        if self._baseline is None:
            self._baseline = current
        deviation = current - self._baseline
        alpha = 1.0 - 2.0 ** (-1.0 / cfg.baseline_halflife)
        self._baseline = self._baseline + alpha * deviation
        local_now = np.stack([window.std(axis=0), residual.std(axis=0), diffs.mean(axis=0)]) + 1e-6
        if self._local is None:
            self._local = local_now
        # Deviations in units of the local scale *before* this window (a tampered window
        # must not widen its own yardstick), then of benign's robust spread.
        shift = deviation / self._local[:2]
        ratio = _spikiness(window) / self._local[0]
        self._local = self._local + alpha * (local_now - self._local)
        if self._calibration is not None:
            self._calibration["shift"].append(shift)
            self._calibration["ratio"].append(ratio)
            self._calibration["channel"].append(np.stack([deviation[0], spread, deviation[1]]))
        # Per-channel groups as one number each: the channel furthest from benign's
        # median, in benign robust spreads (a tampered channel is one of eight).
        channel_max = np.max(
            np.abs(
                (np.stack([deviation[0], spread, deviation[1]]) - self.channel_center)
                / self.channel_scale
            ),
            axis=1,
        )
        x = (shift - self.shift_center) / self.shift_scale
        k = 0.5
        self._cusum = np.minimum(
            np.maximum(0.0, (1.0 - alpha) * self._cusum + np.concatenate([x, -x]) - k), _CUSUM_CAP
        )
        shift_max = float(np.max(np.abs(x[0])))
        level_cusum = float(np.max(self._cusum[[0, 2]]))
        residual_cusum = float(np.max(self._cusum[[1, 3]]))
        spike_local = float(np.max(ratio / self.spike_threshold))
        channels = [deviation[0], spread, deviation[1]] if cfg.per_channel else []
        return np.concatenate(
            [
                *channels,
                [stuck, replay, np.log1p(spike), noise, jump],
                np.log1p([shift_max, level_cusum, residual_cusum, spike_local]),
                np.log1p(channel_max),
            ]
        )

    def _replay_closeness(self, window: np.ndarray, before: np.ndarray) -> float:
        cfg = self.config
        history = np.vstack([self._history, before])[-cfg.history :]
        usable = len(history) - cfg.min_replay_lag + cfg.window
        if usable < cfg.window:
            return 0.0
        candidates = np.lib.stride_tricks.sliding_window_view(
            history[:usable], cfg.window, axis=0
        )  # (k, channels, window)
        distance = np.abs(candidates - window.T[None]).mean(axis=(1, 2))
        # An exact replay gives 0; natural data stays near the noise floor or above.
        return float(-np.log(distance.min() / float(self.noise_floor.mean()) + 1e-3))


_CUSUM_CAP = 1e6  # keeps the state finite (and loadable) whatever the stream does


def _spikiness(z: np.ndarray) -> np.ndarray:
    """Per sample and channel, how far a value leaves and straight comes back:
    min(|x[t]-x[t-1]|, |x[t+1]-x[t]|) where the two steps have opposite signs. A natural
    step change scores 0; an injected single-sample spike scores its height."""
    d = np.diff(z, axis=0)
    back = d[:-1] * d[1:] < 0
    return np.where(back, np.minimum(np.abs(d[:-1]), np.abs(d[1:])), 0.0)


_SENSOR_ARRAYS = (
    "mean",
    "std",
    "coef",
    "intercept",
    "residual_std",
    "noise_floor",
    "spike_scale",
    "window_std",
    "shift_center",
    "shift_scale",
    "spike_threshold",
    "channel_center",
    "channel_scale",
    "_history",
    "_pending",
    "_cusum",
)


_POSITIVE = (
    "std",
    "residual_std",
    "noise_floor",
    "spike_scale",
    "window_std",
    "shift_scale",
    "spike_threshold",
    "channel_scale",
)


def sensor_extractor_to_doc(extractor: SensorFeatureExtractor) -> dict[str, object]:
    """Configuration, benign scales and stream state as JSON-able data."""
    if not extractor._fitted:
        raise DetectMisuse("fit() the extractor before saving it")
    doc: dict[str, object] = {
        "channels": list(extractor.channels),
        "config": vars(extractor.config),
    }
    for name in _SENSOR_ARRAYS:
        doc[name.lstrip("_")] = getattr(extractor, name).tolist()
    doc["prev_level"] = None if extractor._prev_level is None else extractor._prev_level.tolist()
    doc["baseline"] = None if extractor._baseline is None else extractor._baseline.tolist()
    doc["local"] = None if extractor._local is None else extractor._local.tolist()
    return doc


def sensor_extractor_from_doc(doc: dict[str, object]) -> SensorFeatureExtractor:
    """Rebuild from :func:`sensor_extractor_to_doc` output (hostile input).

    Raises:
        DetectMisuse: wrong keys, shapes or values.
    """
    try:
        channels = doc["channels"]
        if not isinstance(channels, list) or not 1 <= len(channels) <= 256:
            raise DetectMisuse("channels must be a list of 1..256 names")
        extractor = SensorFeatureExtractor(
            [str(c) for c in channels],
            SensorFeatureConfig(**doc["config"]),  # type: ignore[arg-type]
        )
        c = len(extractor.channels)
        for name in _SENSOR_ARRAYS:
            value = np.asarray(doc[name.lstrip("_")], dtype=np.float64)
            if name == "coef":
                expected: tuple[int, ...] = (c, c)
            elif name in ("shift_center", "shift_scale"):
                expected = (2, c)
            elif name in ("channel_center", "channel_scale"):
                expected = (3, c)
            elif name == "_cusum":
                expected = (4, c)
            elif name in ("_history", "_pending"):
                value = value.reshape(-1, c)
                expected = value.shape
            else:
                expected = (c,)
            if value.shape != expected or not np.isfinite(value).all():
                raise DetectMisuse(f"{name}: shape {value.shape}, expected {expected}")
            if not (np.abs(value) <= 1e9).all():
                raise DetectMisuse(f"{name}: values beyond ±1e9")
            if name in _POSITIVE and not (value >= 1e-9).all():
                raise DetectMisuse(f"{name}: scales must be at least 1e-9")
            setattr(extractor, name, value)
        prev = doc["prev_level"]
        extractor._prev_level = None if prev is None else np.asarray(prev, dtype=np.float64)
        base = doc["baseline"]
        extractor._baseline = None if base is None else np.asarray(base, dtype=np.float64)
        local = doc.get("local")
        extractor._local = None if local is None else np.asarray(local, dtype=np.float64)
        for name, expected in (("_prev_level", (c,)), ("_baseline", (2, c)), ("_local", (3, c))):
            value = getattr(extractor, name)
            if value is not None and (value.shape != expected or not (np.abs(value) <= 1e9).all()):
                raise DetectMisuse(f"{name.lstrip('_')}: shape {value.shape}, expected {expected}")
        if extractor._local is not None and not (extractor._local >= 1e-9).all():
            raise DetectMisuse("local: scales must be at least 1e-9")
    except (KeyError, TypeError, ValueError) as error:
        raise DetectMisuse(f"bad sensor feature state: {error!r}") from None
    extractor._fitted = True
    return extractor
