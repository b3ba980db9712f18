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

``zrough_max`` (family ``zrough``) watches for added noise: per channel, the log of the
window's mean absolute step over a reference (the running, then EWMA, average of the
earlier windows'; a new stream starts from benign's median), in benign robust spreads
above benign's median, largest over channels, one-sided.

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
from collections.abc import Iterable, Iterator, Sequence
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
    """Rows of a sensor CSV: ``values`` is (n, channels); ``labels`` the label column when
    present (else None); ``lines`` the file line of each row (1 = the header), so that a
    score can be traced back to its row; ``times`` the time column's text when one was
    named (else None)."""

    path: str
    channels: tuple[str, ...]
    values: np.ndarray
    labels: np.ndarray | None
    lines: np.ndarray | None = None
    times: list[str] | None = None
    delimiter: str = ";"


def sniff_delimiter(path: Path | str) -> str:
    """The delimiter of a CSV's header line: the one of ``;`` ``,`` tab ``|`` that occurs
    most often in it (``csv.Sniffer`` guesses from a sample and misreads decimal commas).

    Raises:
        CsvError: unreadable file or empty first line.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            first = handle.readline()
    except OSError as error:
        raise CsvError(path, f"cannot open: {error.strerror}", line=0) from error
    except UnicodeDecodeError as error:
        raise CsvError(path, f"unreadable header: {error}", line=1) from None
    counts = {d: first.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    if not first.strip():
        raise CsvError(path, "empty file: no header row", line=1)
    return best if counts[best] else ";"


_DELIMITERS = (";", ",", "\t", "|")


def read_sensor_csv(
    path: Path | str,
    channels: Sequence[str] | None = SKAB_CHANNELS,
    *,
    delimiter: str | None = ";",
    label_column: str | None = "anomaly",
    time_column: str | None = None,
) -> SensorTable:
    """Read the named numeric columns of a delimited file.

    ``channels=None`` takes every column whose first data cell is a number, except the
    label and time columns; ``delimiter=None`` sniffs it from the header
    (:func:`sniff_delimiter`). A ``label_column`` that is absent gives ``labels=None``; a
    ``time_column`` that is named must exist.

    Raises:
        CsvError: the file cannot be read, a column is missing, a cell is not a finite
            number, a row is short, or there are no rows. Its ``partial`` holds the rows
            read before the problem.
    """
    path = Path(path)
    if delimiter is None:
        delimiter = sniff_delimiter(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as error:
        raise CsvError(path, f"cannot open: {error.strerror}", line=0) from error
    rows: list[list[float]] = []
    labels: list[float] = []
    lines: list[int] = []
    times: list[str] = []
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
        pending: list[tuple[int, list[str]]] = []
        if channels is None:
            channels, pending = _numeric_columns(path, reader, header, label_column, time_column)
        wanted = list(channels) + ([time_column] if time_column else [])
        missing = [name for name in wanted if name not in header]
        if missing:
            raise CsvError(
                path,
                f"missing column(s) {', '.join(map(repr, missing))}; the header has "
                f"{', '.join(map(repr, header))} (delimiter {delimiter!r})",
                line=1,
                column=missing[0],
            )
        named = [*wanted, *([label_column] if label_column in header else [])]
        twice = sorted({name for name in named if header.count(name) > 1})
        if twice:  # header.index would read the first and drop the other silently
            raise CsvError(
                path,
                f"column(s) {', '.join(map(repr, twice))} named more than once in the header; "
                "rename them so each is read",
                line=1,
                column=twice[0],
            )
        index = [header.index(name) for name in channels]
        label_index = (
            header.index(label_column) if label_column and label_column in header else None
        )
        time_index = header.index(time_column) if time_column else None
        line = 1
        try:
            for line, row in _chain(pending, enumerate(reader, start=2 + len(pending))):
                if not row or all(not cell.strip() for cell in row):
                    continue
                values = []
                for name, i in zip(channels, index, strict=True):
                    values.append(_cell(path, row, i, line, name, rows))
                if label_index is not None:
                    labels.append(_cell(path, row, label_index, line, str(label_column), rows))
                if time_index is not None:
                    if time_index >= len(row):
                        raise CsvError(path, f"row has {len(row)} cells, no value for this "
                                       "column", line=line, column=str(time_column),
                                       partial=rows)
                    times.append(row[time_index].strip())
                rows.append(values)
                lines.append(line)
        except (csv.Error, UnicodeDecodeError) as error:
            raise CsvError(path, f"unreadable row: {error}", line=line + 1, partial=rows) from None
    if not rows:
        raise CsvError(path, "no data rows after the header", line=2)
    return SensorTable(
        str(path),
        tuple(channels),
        np.asarray(rows, dtype=np.float64),
        np.asarray(labels, dtype=np.float64) if label_index is not None else None,
        np.asarray(lines, dtype=np.int64),
        times if time_index is not None else None,
        delimiter,
    )


def _chain(
    first: list[tuple[int, list[str]]], rest: Iterable[tuple[int, list[str]]]
) -> Iterator[tuple[int, list[str]]]:
    yield from first
    yield from rest


def _numeric_columns(
    path: Path,
    reader: Iterator[list[str]],
    header: list[str],
    label_column: str | None,
    time_column: str | None,
) -> tuple[tuple[str, ...], list[tuple[int, list[str]]]]:
    """The columns whose first non-empty data row holds a number (that row is returned
    too, to be read again)."""
    pending: list[tuple[int, list[str]]] = []
    for line, row in enumerate(reader, start=2):
        pending.append((line, row))
        if row and any(cell.strip() for cell in row):
            break
    if not pending or not pending[-1][1] or not any(c.strip() for c in pending[-1][1]):
        raise CsvError(path, "no data rows after the header", line=2)
    first = pending[-1][1]
    skip = {label_column, time_column}
    names = []
    for i, name in enumerate(header):
        if name in skip or not name or i >= len(first):
            continue
        try:
            if np.isfinite(float(first[i].strip())):
                names.append(name)
        except ValueError:
            continue
    if not names:
        raise CsvError(path, "no numeric column in the first data row", line=pending[-1][0])
    return tuple(names), pending


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


#: Feature families, in output order. Each family's per-window arithmetic is one method
#: of :class:`SensorFeatureExtractor` (named in the comment); the C export mirrors this
#: list and refuses a model with a family it does not know.
FAMILIES: tuple[str, ...] = (
    "level",  # _group_features: level_dev_max (+ level_dev_i with per_channel)
    "spread",  # _group_features: spread_max (+ spread_i)
    "residual",  # _group_features: residual_dev_max (+ residual_dev_i)
    "stuck",  # _stuck
    "replay",  # _replay_closeness
    "spike",  # _spike
    "noise",  # _noise
    "jump",  # _jump
    "shift",  # _baseline_step: shift_max
    "cusum",  # _baseline_step: shift_cusum, residual_cusum
    "spike_local",  # _baseline_step: spike_local
    "zlevel",  # _yardstick_features: zlevel_max            (new in v2)
    "zresid",  # _yardstick_features: zresid_max            (new in v2)
    "zcusum",  # _yardstick_features: zlevel_cusum, zresid_cusum (new in v2)
    "zspike",  # _yardstick_features: zspike_hold           (new in v2)
    "zslope",  # _slope_step: zslope_max, zslope_cusum      (new in v2)
    "zstep",  # _step_hold: zstep_hold                      (new in v2)
    "zrough",  # _rough_input, _rough_step: zrough_max      (new, h-tamper)
    "lagz",  # _lagz: lagz_alarm                               (new, h-tamper4)
)

#: What changed against the arithmetic the first C export started from (v1), per family.
FAMILY_CHANGES: dict[str, str] = {
    "*": "fixed floors 1e-9/1e-6 replaced by per-channel floors from the data's resolution "
    "(q = smallest step between distinct training values / sqrt(12), in standardised units): "
    "std >= raw quantum/sqrt(12); residual_std, window_std >= q; spike_scale >= one quantum; "
    "robust spreads of level/residual deviations >= q/sqrt(w), of shifts >= 1/sqrt(w), of log "
    "spread >= log1p(sqrt(12/w)); spike_threshold >= 1; local scales + q (were + 1e-6)",
    "order": "features are emitted in FAMILIES order, only for the families switched on (v1 "
    "order: stuck, replay, spike, noise_floor, level_jump, shift_max, shift_cusum, "
    "residual_cusum, spike_local, level_dev_max, spread_max, residual_dev_max)",
    "stuck": "a repeat is |diff| < half a quantum (was 1e-9 relative); score is the excess "
    "of the repeat fraction over the channel's benign 99.9th percentile, over its headroom",
    "noise": "|log((median|diff| + q) / (benign median + q))| (was +1e-6 on both)",
    "spread": "log((window std + q) / (benign median window std + q))",
    "replay": "floor is mean(benign median |diff| + q) (was mean(median + 1e-6))",
    "zlevel": "new", "zresid": "new", "zcusum": "new", "zspike": "new", "zslope": "new",
    "zstep": "new",
    "zrough": "new (h-tamper): state adds a roughness reference per channel and its count",
    "lagz": "new (h-tamper4): per-channel alarm from the history ring, no stream state; "
    "three calibration rows per channel (centre, spread, tail)",
}

_FAMILY_FEATURES: dict[str, tuple[str, ...]] = {
    "level": ("level_dev_max",),
    "spread": ("spread_max",),
    "residual": ("residual_dev_max",),
    "stuck": ("stuck",),
    "replay": ("replay",),
    "spike": ("spike",),
    "noise": ("noise_floor",),
    "jump": ("level_jump",),
    "shift": ("shift_max",),
    "cusum": ("shift_cusum", "residual_cusum"),
    "spike_local": ("spike_local",),
    "zlevel": ("zlevel_max",),
    "zresid": ("zresid_max",),
    "zcusum": ("zlevel_cusum", "zresid_cusum"),
    "zspike": ("zspike_hold",),
    "zslope": ("zslope_max", "zslope_cusum"),
    "zstep": ("zstep_hold",),
    "zrough": ("zrough_max",),
    "lagz": ("lagz_alarm",),
}

#: Alarm channels: families that alarm on their own (above 1) and are OR-ed with the
#: detector (:class:`tinyward.detect.sensorfusion.ChannelAlarmFused`) rather than fed to
#: it; the family rule (:mod:`tinyward.detect.sensordev`) does not search them.
ALARM_FAMILIES: tuple[str, ...] = ("lagz",)

#: lagz's reference: the LAGZ_REACH samples that end LAGZ_GAP samples before the window
#: (a 120-sample tamper segment never enters the reference of a window inside it once
#: the gap is >= 90). Chosen on the dev split only (benchmarks/sensor_chanalarm_dev.py).
LAGZ_GAP = 180
LAGZ_REACH = 60
#: lagz's tail is this many times the channel's largest benign value. 1 (the largest
#: itself) kept 0.29 % dev false alarms but 5.7 % with the roles of the training streams
#: swapped (calibrated on the dev streams, counted on the fit ones): a maximum over nine
#: recordings does not carry to others. The rule: the smallest of 1, 1.25, 1.5, 2, 2.5,
#: 3, 4 whose swapped false alarms stay <= 1 % (sensordev.MAX_DEV_ALARMS): 1.5 (0.87 %).
LAGZ_MARGIN = 1.5

#: Default families, chosen by a stated rule
#: (:func:`tinyward.detect.sensordev.select_families`, reproduced by a test) on SKAB's
#: TRAINING streams only (never the eval's test streams): fit on the first 60 % of the
#: training part of anomaly-free.csv and the even training run prefixes, inject every
#: tamper kind into the rest (seeds 100+, six rounds: 144 windows per kind, 102 for
#: spikes, 683 benign), then search family sets (best single add/drop moves, from every
#: family and from the best single one) for the highest mean ROC AUC over the six kinds
#: (float Mahalanobis), among sets that put at most 1 % of the dev benign windows above
#: the detector's own threshold (``sensordev.MAX_DEV_ALARMS``). Re-run by h-tamper after
#: adding ``zrough``: dev AUCs freeze 0.994, replay 1.000, bias 0.813, drift 0.727,
#: spikes 0.946, noise 0.965, mean 0.907, dev false alarms 0.29 % (the previous defaults:
#: 0.995, 1.000, 0.814, 0.740, 0.954, 0.912, mean 0.902, 0.44 %). History in
#: docs/detect.md. The others stay available with --features.
DEFAULT_FAMILIES: tuple[str, ...] = (
    "stuck", "replay", "spike", "zlevel", "zresid", "zspike", "zrough",
)

#: A channel whose values differ from its most common value in fewer than this share of
#: the training rows is near-constant: it carries no learnable normal behaviour, and its
#: scales would be set by a handful of rows (1 non-zero row in 1,731 gave residual scales
#: ~77 standard deviations wide on benign data).
NEAR_CONSTANT_SHARE = 0.005


class SensorChannelWarning(UserWarning):
    """A channel was dropped at fit time (constant or near-constant); the message names it."""


def screen_channels(
    values: np.ndarray, names: Sequence[str], *, min_share: float = NEAR_CONSTANT_SHARE
) -> tuple[list[int], list[tuple[str, str]]]:
    """Indices of the channels worth modelling, and ``(name, reason)`` for the others:
    constant ones, and near-constant ones (fewer than ``min_share`` of the rows differ
    from the most common value)."""
    keep: list[int] = []
    dropped: list[tuple[str, str]] = []
    for i, name in enumerate(names):
        column = values[:, i]
        distinct, counts = np.unique(column, return_counts=True)
        if len(distinct) == 1:
            dropped.append((name, f"constant ({distinct[0]:g}) in all {len(column)} rows"))
            continue
        other = len(column) - int(counts.max())
        if other < min_share * len(column):
            dropped.append(
                (name, f"near-constant: {other} of {len(column)} rows differ from "
                 f"{distinct[np.argmax(counts)]:g}")
            )
            continue
        keep.append(i)
    return keep, dropped


def resolution(column: np.ndarray) -> float:
    """The smallest non-zero difference between distinct values: the channel's quantum
    (0.0 for a constant channel)."""
    steps = np.diff(np.unique(column))
    steps = steps[steps > 0]
    return float(steps.min()) if len(steps) else 0.0


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
    families: tuple[str, ...] = DEFAULT_FAMILIES
    # Samples: the half-life of the per-sample yardstick (EWMA mean and variance of the
    # samples before each window) that the z families measure a window against.
    yardstick_halflife: int = 300
    hold_halflife: int = 6  # windows: how long zspike remembers a spike
    # 0: the yardstick is an EWMA level; n > 0: a Holt level and trend, the trend learning
    # with gain 1 - 2^(-1/n) of the level's correction (a drifting channel is then judged
    # against where its trend says it should be, not against a lagging mean).
    trend_halflife: int = 0
    # No windows: each row, standardised, is one vector (the "raw-row" model).
    raw_rows: bool = False

    def __post_init__(self) -> None:
        # Also guards loading a saved state from a hostile file.
        for name, low, high in (
            ("window", 3, 10_000),
            ("step", 1, 10_000),
            ("history", 0, 1_000_000),
            ("min_replay_lag", 1, 1_000_000),
            ("baseline_halflife", 1, 1_000_000),
            ("yardstick_halflife", 1, 1_000_000),
            ("hold_halflife", 1, 1_000_000),
            ("trend_halflife", 0, 1_000_000),
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool)
                    and low <= value <= high):
                raise DetectMisuse(f"{name}={value!r} must be an integer in {low}..{high}")
        for name in ("per_channel", "raw_rows"):
            if not isinstance(getattr(self, name), bool):
                raise DetectMisuse(f"{name}={getattr(self, name)!r} must be true or false")
        if self.min_replay_lag < self.window:
            raise DetectMisuse("min_replay_lag must be at least the window")
        families = self.families
        if isinstance(families, list):  # from JSON
            object.__setattr__(self, "families", tuple(families))
            families = self.families
        if not isinstance(families, tuple) or not families:
            raise DetectMisuse("families must be a non-empty list of feature families")
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise DetectMisuse(
                f"unknown feature famil{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(map(repr, unknown))}; known: {', '.join(FAMILIES)}"
            )
        if len(set(families)) != len(families):
            raise DetectMisuse("families lists a family twice")


def parse_families(text: str) -> tuple[str, ...]:
    """``"level,stuck,..."`` (or ``"all"``, ``"default"``) as a families tuple, in
    :data:`FAMILIES` order.

    Raises:
        DetectMisuse: an unknown name.
    """
    text = text.strip()
    if text == "all":
        return FAMILIES
    if text == "default":
        return DEFAULT_FAMILIES
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise DetectMisuse(
            f"unknown feature famil{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(map(repr, unknown)) or '(none given)'}; known: {', '.join(FAMILIES)}"
        )
    return tuple(f for f in FAMILIES if f in names)


class SensorFeatureExtractor:
    """Fit on benign samples, then turn streams into window feature vectors."""

    def __init__(self, channels: Sequence[str], config: SensorFeatureConfig | None = None) -> None:
        self.channels = tuple(channels)
        self.config = config or SensorFeatureConfig()
        c = len(self.channels)
        cfg = self.config
        if cfg.raw_rows:
            self.feature_names: tuple[str, ...] = tuple(f"z_{name}" for name in self.channels)
        else:
            names: list[str] = []
            if cfg.per_channel:
                for family, prefix in (("level", "level_dev"), ("spread", "spread"),
                                       ("residual", "residual_dev")):
                    if family in cfg.families:
                        names += [f"{prefix}_{i}" for i in range(c)]
            for family in FAMILIES:
                if family in cfg.families:
                    names += _FAMILY_FEATURES[family]
            self.feature_names = tuple(names)
        self._fitted = False
        # Filled only during fit()'s first pass.
        self._calibration: dict[str, list[np.ndarray]] | None = None

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def state_bytes(self) -> int:
        """Stream state as float32 for the C port: the replay history and the pending
        window, then per channel the previous level (1), baselines (2), local scales (3),
        CUSUMs (4), yardstick (4), yardstick CUSUMs (4), Holt trends (2), slope (1),
        slope CUSUMs (2), the step ratio (1) and the roughness reference (1); two holds,
        the yardstick's sample count and the roughness reference's. Raw rows keep none."""
        if self.config.raw_rows:
            return 0
        c = len(self.channels)
        cfg = self.config
        return 4 * ((cfg.history + cfg.window) * c
                    + (1 + 2 + 3 + 4 + 4 + 4 + 2 + 1 + 2 + 1 + 1) * c + 4)

    def copy(self) -> SensorFeatureExtractor:
        return copy.deepcopy(self)

    def fit(self, values: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Learn scales and the cross-channel fit on benign samples: one (n, channels)
        array, or a list of them recorded separately (runs at other operating points).
        Return the benign window features of every stream, each from a fresh stream
        state; afterwards the stream state continues after the last one.

        Raises:
            DetectMisuse: wrong shape, fewer than three windows of samples in a stream,
                or a constant channel (drop it first: :func:`screen_channels`).
        """
        streams = [values] if isinstance(values, np.ndarray) else list(values)
        streams = [self._check(v) for v in streams]
        cfg = self.config
        least = 10 if cfg.raw_rows else 3 * cfg.window
        if not streams or any(len(v) < least for v in streams):
            raise DetectMisuse(f"need at least {least} benign samples per stream")
        joined = np.vstack(streams)
        raw_resolution = np.array([resolution(joined[:, i]) for i in range(joined.shape[1])])
        constant = [self.channels[i] for i in np.flatnonzero(raw_resolution == 0)]
        if constant:
            raise DetectMisuse(
                f"constant channel(s) {', '.join(map(repr, constant))} in the benign data: "
                "nothing to learn; leave them out (screen_channels)"
            )
        self.mean = joined.mean(axis=0)
        # A channel's spread is at least its quantisation noise (a uniform error of one
        # quantum has std quantum / sqrt(12)): a near-constant channel cannot make one
        # quantum look like many standard deviations.
        self.std = np.maximum(joined.std(axis=0), raw_resolution / np.sqrt(12.0))
        #: per-channel quantisation noise in standardised units: the floor of every scale
        self.quantum = raw_resolution / self.std / np.sqrt(12.0)
        self._fitted = True
        if cfg.raw_rows:
            self.reset_stream()
            return np.vstack([self.transform(v) for v in streams])
        q = self.quantum
        w = cfg.window
        zs = [(v - self.mean) / self.std for v in streams]
        # Each channel as a linear function of the others, learnt on variation within a
        # stream (levels differ between runs; features use deviations from a baseline).
        centred = np.vstack([z - z.mean(axis=0) for z in zs])
        c = centred.shape[1]
        self.coef = np.zeros((c, c))
        self.intercept = np.zeros(c)
        for j in range(c):
            others = [k for k in range(c) if k != j]
            if not others:
                continue
            solution, *_ = np.linalg.lstsq(centred[:, others], centred[:, j], rcond=None)
            self.coef[j, others] = solution
        residual = centred - centred @ self.coef.T
        self.residual_std = np.maximum(residual.std(axis=0), q)
        diffs = np.vstack([np.abs(np.diff(z, axis=0)) for z in zs])
        self.noise_floor = np.median(diffs, axis=0)
        self.spike_scale = np.maximum(
            np.quantile(np.vstack([_spikiness(z) for z in zs]), 0.999, axis=0),
            np.sqrt(12.0) * q,  # one quantum
        )
        self.window_std = np.maximum(
            np.median(
                np.stack([z[i : i + w].std(axis=0)
                          for z in zs for i in range(0, len(z) - w, cfg.step)]),
                axis=0,
            ),
            q,
        )
        # First pass with neutral scales: collect the raw statistics of the benign
        # windows, then fix their benign centres, scales and thresholds.
        self.shift_center = np.zeros((2, c))
        self.shift_scale = np.ones((2, c))
        self.spike_threshold = np.full(c, np.inf)
        self.channel_center = np.zeros((3, c))
        self.channel_scale = np.ones((3, c))
        self.repeat_high = np.zeros(c)
        self.z_center = np.zeros((2, c))
        self.z_scale = np.ones((2, c))
        self.zspike_threshold = np.ones(c)
        self.slope_center = np.zeros(c)
        self.slope_scale = np.ones(c)
        self.step_threshold = np.ones(c)
        self.yard_init = np.zeros((2, c))
        self.rough_center = np.zeros(c)
        self.rough_scale = np.ones(c)
        self.lagz_center = np.zeros(c)
        self.lagz_scale = np.ones(c)
        self.lagz_tail = np.ones(c)
        # a new stream's roughness reference: benign's median window mean |step| (+q)
        self.rough_init = np.median(
            np.stack([np.abs(np.diff(z[i : i + w], axis=0)).mean(axis=0)
                      for z in zs for i in range(0, len(z) - w, cfg.step)]),
            axis=0,
        ) + q
        keys = ("shift", "ratio", "channel", "repeat", "z", "zspike", "slope", "yard", "step",
                "rough", "lagz")
        calibration: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        self._calibration = calibration
        for v in streams:
            self.reset_stream()
            self.transform(v)
        self._calibration = None
        floor_mean = 1.0 / np.sqrt(w)  # a window mean's standard error, in its own stds
        shifts = np.stack(calibration["shift"])  # (windows, 2, c)
        self.shift_center = np.median(shifts, axis=0)
        self.shift_scale = np.maximum(_robust_spread(shifts, self.shift_center), floor_mean)
        ratios = np.vstack(calibration["ratio"])  # (samples, c)
        self.spike_threshold = np.maximum(np.quantile(ratios, 0.999, axis=0), 1.0)
        per_channel = np.stack(calibration["channel"])  # (windows, 3, c)
        self.channel_center = np.median(per_channel, axis=0)
        one_step = np.log1p(np.sqrt(12.0 / w))  # log spread change of one quantum step
        floors = np.stack([q / np.sqrt(w), np.full(c, one_step), q / np.sqrt(w)])
        self.channel_scale = np.maximum(_robust_spread(per_channel, self.channel_center), floors)
        self.repeat_high = np.quantile(np.stack(calibration["repeat"]), 0.999, axis=0)
        zvals = np.stack(calibration["z"])  # (windows, 2, c)
        self.z_center = np.median(zvals, axis=0)
        self.z_scale = np.maximum(_robust_spread(zvals, self.z_center), floor_mean)
        self.zspike_threshold = np.maximum(
            np.quantile(np.stack(calibration["zspike"]), 0.999, axis=0), 1.0
        )
        self.yard_init = np.median(np.stack(calibration["yard"]), axis=0)
        # a step under a few mean steps is no step (floor 1: the mean itself)
        self.step_threshold = np.maximum(
            np.quantile(np.stack(calibration["step"]), 0.999, axis=0), 1.0
        )
        roughs = np.stack(calibration["rough"])
        self.rough_center = np.median(roughs, axis=0)
        self.rough_scale = np.maximum(_robust_spread(roughs, self.rough_center), 1.0 / np.sqrt(w))
        self._fit_lagz(calibration["lagz"], floor_mean)
        slopes = np.stack(calibration["slope"])
        self.slope_center = np.median(slopes, axis=0)
        # floor: a one-quantum change across the window
        self.slope_scale = np.maximum(_robust_spread(slopes, self.slope_center),
                                      np.sqrt(12.0) * q / w)
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
        # Yardstick: EWMA mean and variance of the samples (and of their cross-channel
        # residuals) before the current window: (4, channels) = mean, var, rmean, rvar.
        self._yard: np.ndarray | None = None
        self._trend = np.zeros((2, c))  # per sample: channel, residual (Holt; 0 if off)
        self._yard_n = 0.0  # samples in the yardstick (the first window counts)
        self._zcusum = np.zeros((4, c))
        self._hold = 0.0
        self._slope: np.ndarray | None = None  # (c,) EWMA of window slopes
        self._step_ratio = np.zeros(c)
        self._rough = np.zeros(c)
        self._rough_ref: np.ndarray | None = None  # (c,) reference mean |step| (+q)
        self._rough_n = 0.0  # windows in it (the benign prior counts as one)
        self._slope_cusum = np.zeros((2, c))
        self._step_hold = 0.0

    def _check(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.channels):
            raise DetectMisuse(f"expected (n, {len(self.channels)}) samples, got {values.shape}")
        return values

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Append samples to the stream; return one row per completed window.

        Window ``i`` of this call ends at sample ``window_ends[i]`` (relative to the
        samples passed; exclusive, so its last sample is ``window_ends[i] - 1``),
        available afterwards as :attr:`last_window_ends`. With ``raw_rows`` every sample
        is its own vector (``window_ends`` = 1, 2, ...).
        """
        if not self._fitted:
            raise DetectMisuse("fit() must be called before transform()")
        values = self._check(values)
        z = (values - self.mean) / self.std
        cfg = self.config
        if cfg.raw_rows:
            self.last_window_ends = np.arange(1, len(z) + 1, dtype=np.int64)
            return np.asarray(z, dtype=np.float64)
        carried = len(self._pending)
        stream = np.vstack([self._pending, z])
        rows: list[np.ndarray] = []
        ends: list[int] = []
        start = 0
        fed = 0  # samples of `stream` already in the yardstick (pending ones never are)
        while start + cfg.window <= len(stream):
            if self._yard is not None:
                self._feed_yardstick(stream[fed:start])
            fed = start
            window = stream[start : start + cfg.window]
            rows.append(self._window_features(window, stream[:start]))
            ends.append(start + cfg.window - carried)
            start += cfg.step
        if self._yard is not None:
            self._feed_yardstick(stream[fed:start])
        # Keep the tail that has not formed a window yet, and the replay history.
        consumed = stream[:start]
        self._history = np.vstack([self._history, consumed])[-cfg.history :]
        self._pending = stream[start:]
        self.last_window_ends = np.asarray(ends, dtype=np.int64)
        if not rows:
            return np.zeros((0, self.n_features))
        return np.vstack(rows)

    # ---------------------------------------------------------------- per-window steps
    def _window_features(self, window: np.ndarray, before: np.ndarray) -> np.ndarray:
        cfg = self.config
        level = window.mean(axis=0)
        residual = window - (window @ self.coef.T + self.intercept)
        diffs = np.abs(np.diff(window, axis=0))
        spread = np.log((window.std(axis=0) + self.quantum) / (self.window_std + self.quantum))
        out: dict[str, list[float]] = {}
        out["stuck"] = [self._stuck(diffs)]
        out["replay"] = [self._replay_closeness(window, before)]
        out["spike"] = [float(np.log1p(self._spike(window)))]
        out["noise"] = [self._noise(diffs)]
        out["jump"] = [self._jump(level)]
        deviation, shift_max, level_cusum, residual_cusum, spike_local = self._baseline_step(
            window, level, residual / self.residual_std, diffs
        )
        out["shift"] = [float(np.log1p(shift_max))]
        out["cusum"] = list(np.log1p([level_cusum, residual_cusum]))
        out["spike_local"] = [float(np.log1p(spike_local))]
        groups = np.stack([deviation[0], spread, deviation[1]])
        channel_max = self._group_features(groups)
        out["level"], out["spread"], out["residual"] = ([float(x)] for x in np.log1p(channel_max))
        zlevel, zresid, zl_cusum, zr_cusum, zspike = self._yardstick_features(window, residual)
        out["zlevel"] = [float(np.log1p(zlevel))]
        out["zresid"] = [float(np.log1p(zresid))]
        out["zcusum"] = list(np.log1p([zl_cusum, zr_cusum]))
        out["zspike"] = [float(np.log1p(zspike))]
        slope_max, slope_cusum = self._slope_step(window)
        out["zslope"] = list(np.log1p([slope_max, slope_cusum]))
        out["zstep"] = [float(np.log1p(self._step_hold_step(diffs)))]
        out["zrough"] = [float(np.log1p(self._rough_step()))]
        if "lagz" in cfg.families or self._calibration is not None:
            out["lagz"] = [self._lagz(window, before)]
        per_channel: list[np.ndarray] = []
        if cfg.per_channel:
            for family, values in zip(("level", "spread", "residual"), groups, strict=True):
                if family in cfg.families:
                    per_channel.append(values)
        vector = [x for family in FAMILIES if family in cfg.families for x in out[family]]
        return np.concatenate([*per_channel, np.asarray(vector, dtype=np.float64)])

    def _stuck(self, diffs: np.ndarray) -> float:
        """The largest excess, over channels, of the window's share of repeated values
        (a step under half a quantum) over the channel's benign 99.9th percentile, as a
        share of the headroom left: an on/off channel that repeats naturally scores 0."""
        repeats = np.mean(diffs < 0.5 * np.sqrt(12.0) * self.quantum, axis=0)
        if self._calibration is not None:
            self._calibration["repeat"].append(repeats)
        headroom = np.maximum(1.0 - self.repeat_high, 1.0 / len(diffs))
        return float(np.max(np.maximum(0.0, repeats - self.repeat_high) / headroom))

    def _spike(self, window: np.ndarray) -> float:
        return float(np.max(_spikiness(window) / self.spike_scale))

    def _noise(self, diffs: np.ndarray) -> float:
        q = self.quantum
        ratio = (np.median(diffs, axis=0) + q) / (self.noise_floor + q)
        return float(np.max(np.abs(np.log(ratio))))

    def _jump(self, level: np.ndarray) -> float:
        jump = 0.0 if self._prev_level is None else float(np.max(np.abs(level - self._prev_level)))
        self._prev_level = level
        return jump

    def _baseline_step(
        self, window: np.ndarray, level: np.ndarray, residual: np.ndarray, diffs: np.ndarray
    ) -> tuple[np.ndarray, float, float, float, float]:
        """Levels and residuals as deviations from their own slow baseline (a process
        drifts over hours, a bias or drift attack within minutes), in units of the local
        scale before this window; leaky CUSUMs of them; the local spike ratio."""
        cfg = self.config
        current = np.stack([level, residual.mean(axis=0)])
        if self._baseline is None:
            self._baseline = current
        deviation = current - self._baseline
        alpha = 1.0 - 2.0 ** (-1.0 / cfg.baseline_halflife)
        self._baseline = self._baseline + alpha * deviation
        q = self.quantum
        local_now = np.stack([window.std(axis=0), residual.std(axis=0), diffs.mean(axis=0)]) + q
        if self._local is None:
            self._local = local_now
        # A tampered window must not widen its own yardstick: use the scale from before.
        shift = deviation / self._local[:2]
        ratio = _spikiness(window) / self._local[0]
        # zstep's input: the largest step over the mean |step| before this window
        self._step_ratio = np.max(diffs, axis=0) / self._local[2]
        self._rough = self._rough_input(local_now[2], alpha)
        self._local = self._local + alpha * (local_now - self._local)
        if self._calibration is not None:
            self._calibration["shift"].append(shift)
            self._calibration["ratio"].append(ratio)
        x = (shift - self.shift_center) / self.shift_scale
        self._cusum = _cusum_step(self._cusum, x, alpha)
        return (
            deviation,
            float(np.max(np.abs(x[0]))),
            float(np.max(self._cusum[[0, 2]])),
            float(np.max(self._cusum[[1, 3]])),
            float(np.max(ratio / self.spike_threshold)),
        )

    def _group_features(self, groups: np.ndarray) -> np.ndarray:
        """Per-channel groups as one number each: the channel furthest from benign's
        median, in benign robust spreads (a tampered channel is one of many)."""
        if self._calibration is not None:
            self._calibration["channel"].append(groups)
        return np.asarray(
            np.max(np.abs((groups - self.channel_center) / self.channel_scale), axis=1)
        )

    def _yardstick_features(
        self, window: np.ndarray, residual: np.ndarray
    ) -> tuple[float, float, float, float, float]:
        """The window against the samples before it: its mean (and its cross-channel
        residual's) in units of the EWMA std of the earlier samples, calibrated per channel
        on benign windows; leaky CUSUMs of both; and the largest isolated excursion over
        that std, held with a decay (a few spikes in a stretch leave windows without one)."""
        q = self.quantum
        if self._yard is None:
            # A new stream starts from the window's means and at least benign's typical
            # yardstick variances: one window's variance is too narrow a yardstick and
            # made every clean start of a recording look shifted.
            self._yard_n = float(len(window))
            self._yard = np.stack(
                [window.mean(axis=0), np.maximum(window.var(axis=0), self.yard_init[0]),
                 residual.mean(axis=0), np.maximum(residual.var(axis=0), self.yard_init[1])]
            )
            if self.config.trend_halflife:
                t = np.arange(len(window)) - (len(window) - 1) / 2.0
                self._trend = np.stack([t @ window, t @ residual]) / float(t @ t)
        yard = self._yard
        if self._calibration is not None:
            self._calibration["yard"].append(yard[[1, 3]].copy())
        scale = np.sqrt(yard[[1, 3]] + q * q)
        # where the level (and its trend) puts the window's centre
        expected = yard[[0, 2]] + self._trend * (len(window) + 1) / 2.0
        z = (np.stack([window.mean(axis=0), residual.mean(axis=0)]) - expected) / scale
        zspike = np.max(_spikiness(window), axis=0) / scale[0]
        if self._calibration is not None:
            self._calibration["z"].append(z)
            self._calibration["zspike"].append(zspike)
        x = (z - self.z_center) / self.z_scale
        alpha = 1.0 - 2.0 ** (-1.0 / self.config.baseline_halflife)
        self._zcusum = _cusum_step(self._zcusum, x, alpha)
        decay = 2.0 ** (-1.0 / self.config.hold_halflife)
        self._hold = max(self._hold * decay, float(np.max(zspike / self.zspike_threshold)))
        return (
            float(np.max(np.abs(x[0]))),
            float(np.max(np.abs(x[1]))),
            float(np.max(self._zcusum[[0, 2]])),
            float(np.max(self._zcusum[[1, 3]])),
            self._hold,
        )

    def _slope_step(self, window: np.ndarray) -> tuple[float, float]:
        """The window's least-squares slope per channel against the EWMA of earlier
        windows' slopes, in benign robust spreads (largest over channels), and a leaky
        two-sided CUSUM of it: a drift is a sustained change of slope from its start,
        before the level has moved far."""
        w = len(window)
        t = np.arange(w) - (w - 1) / 2.0
        slope = t @ window / float(t @ t)
        if self._slope is None:
            self._slope = slope
        deviation = slope - self._slope
        alpha = 1.0 - 2.0 ** (-1.0 / self.config.baseline_halflife)
        self._slope = self._slope + alpha * deviation
        if self._calibration is not None:
            self._calibration["slope"].append(deviation)
        x = (deviation - self.slope_center) / self.slope_scale
        self._slope_cusum = np.minimum(
            np.maximum(0.0, (1.0 - alpha) * self._slope_cusum + np.stack([x, -x]) - 0.5),
            _CUSUM_CAP,
        )
        return float(np.max(np.abs(x))), float(np.max(self._slope_cusum))

    def _step_hold_step(self, diffs: np.ndarray) -> float:
        """The largest sample-to-sample step in the window over the channel's mean step
        before the window (its local scale), over benign's 99.9th percentile of that
        ratio, held with a decay: a bias starts with a step that a smooth channel never
        takes, and the hold keeps it visible for a while."""
        decay = 2.0 ** (-1.0 / self.config.hold_halflife)
        if self._calibration is not None:
            self._calibration["step"].append(self._step_ratio)
        now = float(np.max(self._step_ratio / self.step_threshold))
        self._step_hold = max(self._step_hold * decay, now)
        return self._step_hold

    def _rough_input(self, now: np.ndarray, alpha: float) -> np.ndarray:
        """zrough's input: log of the window's mean |step| (+q) over its reference, the
        average of the earlier windows' (a tampered window must not widen its own
        yardstick). A new stream's reference starts at benign's median and counts as one
        window; it is a running average until the baseline's EWMA gain is larger (from
        one window's roughness alone, the first windows of every recording alarmed)."""
        if self._rough_ref is None:
            self._rough_ref = self.rough_init.copy()
            self._rough_n = 1.0
        ratio = np.log(now / self._rough_ref)
        self._rough_n += 1.0
        gain = max(alpha, 1.0 / self._rough_n)
        self._rough_ref = self._rough_ref + gain * (now - self._rough_ref)
        return np.asarray(ratio)

    def _rough_step(self) -> float:
        """How much rougher the window is than the channel's recent past (the log ratio
        of :meth:`_rough_input`), in benign robust spreads above benign's median,
        largest over channels (one-sided: added noise roughens; a freeze is stuck's)."""
        if self._calibration is not None:
            self._calibration["rough"].append(self._rough)
        x = (self._rough - self.rough_center) / self.rough_scale
        return max(0.0, float(np.max(x)))

    def _lagz(self, window: np.ndarray, before: np.ndarray) -> float:
        """lagz_alarm: per channel, the window's mean against a *lagged* reference (the
        LAGZ_REACH samples ending LAGZ_GAP before the window, which a tamper segment
        around the window never enters, so a bias cannot become its own yardstick), in
        the reference's std (floor: q); centred and scaled per channel on benign windows,
        then over the channel's OWN largest benign value times LAGZ_MARGIN (its tail):
        the largest such ratio over channels. Above 1: some channel is well beyond
        anything it did in training.
        The tail is per channel so that a wandering channel's benign excursions cannot
        hide a bias on a quiet one (taking the max of unmatched channels lost it).
        0 while the stream holds no reference of at least one window."""
        cfg = self.config
        rows = np.vstack([self._history, before])[-cfg.history :]
        stop = len(rows) - LAGZ_GAP
        begin = max(0, stop - LAGZ_REACH)
        if stop - begin < cfg.window:
            return 0.0
        ref = rows[begin:stop]
        z = (window.mean(axis=0) - ref.mean(axis=0)) / np.maximum(ref.std(axis=0), self.quantum)
        if self._calibration is not None:
            self._calibration["lagz"].append(z)
        return float(np.max(np.abs(z - self.lagz_center) / self.lagz_scale / self.lagz_tail))

    def _fit_lagz(self, values: list[np.ndarray], floor: float) -> None:
        """lagz's benign centre (median), spread (robust, floor ``floor``) and tail
        (LAGZ_MARGIN times the largest benign |deviation| in spreads, at least 1) per
        channel."""
        c = len(self.channels)
        if not values:  # no fit stream was long enough for a reference: a neutral alarm
            self.lagz_center, self.lagz_scale = np.zeros(c), np.ones(c)
            self.lagz_tail = np.full(c, 1e6)
            return
        zs = np.stack(values)
        self.lagz_center = np.median(zs, axis=0)
        self.lagz_scale = np.maximum(_robust_spread(zs, self.lagz_center), floor)
        self.lagz_tail = LAGZ_MARGIN * np.maximum(
            np.max(np.abs(zs - self.lagz_center) / self.lagz_scale, axis=0), 1.0)

    def _feed_yardstick(self, samples: np.ndarray) -> None:
        """Per sample, in order: EWMA mean and variance of each channel and of its
        cross-channel residual (``v = (1 - a) (v + a d^2)``, ``d`` = sample - old mean)."""
        if self._yard is None:
            return
        a_min = 1.0 - 2.0 ** (-1.0 / self.config.yardstick_halflife)
        n = self.config.trend_halflife
        beta = 1.0 - 2.0 ** (-1.0 / n) if n else 0.0
        yard, trend = self._yard, self._trend
        for x in samples:
            # A running average until the EWMA's own gain is larger: a young stream's
            # yardstick settles in tens of samples, not in hundreds.
            self._yard_n += 1.0
            a = max(a_min, 1.0 / self._yard_n)
            r = x - (x @ self.coef.T + self.intercept)
            for k, mean, var, value in ((0, 0, 1, x), (1, 2, 3, r)):
                d = value - (yard[mean] + trend[k])  # one-step error (Holt; trend 0 if off)
                yard[mean] = yard[mean] + trend[k] + a * d
                trend[k] = trend[k] + beta * a * d
                yard[var] = (1.0 - a) * (yard[var] + a * d * d)

    def _replay_closeness(self, window: np.ndarray, before: np.ndarray) -> float:
        """``-log`` of the smallest mean absolute difference between the window and any
        earlier stretch of the history (lags >= min_replay_lag), over the noise floor."""
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
        floor = float(np.mean(self.noise_floor + self.quantum))
        return float(-np.log(distance.min() / floor + 1e-3))


_CUSUM_CAP = 1e6  # keeps the state finite (and loadable) whatever the stream does


def _cusum_step(state: np.ndarray, x: np.ndarray, alpha: float) -> np.ndarray:
    """Two-sided leaky Page CUSUM, ``S = max(0, (1 - a) S + x - k)`` with k = 0.5 benign
    robust spreads; ``state`` is (4, c): rows [+x0, +x1, -x0, -x1]."""
    return np.asarray(np.minimum(
        np.maximum(0.0, (1.0 - alpha) * state + np.concatenate([x, -x]) - 0.5), _CUSUM_CAP
    ))


def _robust_spread(values: np.ndarray, center: np.ndarray) -> np.ndarray:
    return np.asarray(1.4826 * np.median(np.abs(values - center), axis=0))


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
    "quantum",
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
    "repeat_high",
    "z_center",
    "z_scale",
    "zspike_threshold",
    "slope_center",
    "slope_scale",
    "step_threshold",
    "yard_init",
    "rough_center",
    "rough_scale",
    "rough_init",
    "lagz_center",
    "lagz_scale",
    "lagz_tail",
    "_history",
    "_pending",
    "_cusum",
    "_zcusum",
    "_slope_cusum",
)
_RAW_ARRAYS = ("mean", "std", "quantum")
# zrough's tables: optional in a state saved before zrough (only when zrough is off)
_V3_ARRAYS = ("rough_center", "rough_scale", "rough_init")
# lagz's tables: optional in a state saved before lagz (only when lagz is off)
_V4_ARRAYS = ("lagz_center", "lagz_scale", "lagz_tail")

_SHAPES: dict[str, int | None] = {  # rows of a (rows, channels) array; None: (channels,)
    "coef": -1, "shift_center": 2, "shift_scale": 2, "channel_center": 3, "channel_scale": 3,
    "z_center": 2, "z_scale": 2, "_cusum": 4, "_zcusum": 4, "_slope_cusum": 2, "yard_init": 2,
}

_POSITIVE = (
    "std",
    "residual_std",
    "spike_scale",
    "window_std",
    "shift_scale",
    "spike_threshold",
    "channel_scale",
    "z_scale",
    "zspike_threshold",
    "slope_scale",
    "step_threshold",
    "rough_scale",
    "rough_init",
    "lagz_scale",
    "lagz_tail",
)
_NON_NEGATIVE = (
    "quantum", "noise_floor", "repeat_high", "yard_init", "_cusum", "_zcusum", "_slope_cusum",
)
_OPTIONAL = {"prev_level": None, "baseline": 2, "local": 3, "yard": 4, "slope": None,
             "trend": 2, "rough_ref": None}  # rows, None: (c,)


def sensor_extractor_to_doc(extractor: SensorFeatureExtractor) -> dict[str, object]:
    """Configuration, benign scales and stream state as JSON-able data."""
    if not extractor._fitted:
        raise DetectMisuse("fit() the extractor before saving it")
    config = dict(vars(extractor.config))
    config["families"] = list(extractor.config.families)
    doc: dict[str, object] = {"channels": list(extractor.channels), "config": config}
    for name in _RAW_ARRAYS if extractor.config.raw_rows else _SENSOR_ARRAYS:
        doc[name.lstrip("_")] = getattr(extractor, name).tolist()
    if not extractor.config.raw_rows:
        for name in _OPTIONAL:
            value = getattr(extractor, "_" + name)
            doc[name] = None if value is None else value.tolist()
        doc["hold"] = extractor._hold
        doc["step_hold"] = extractor._step_hold
        doc["yard_n"] = extractor._yard_n
        doc["rough_n"] = extractor._rough_n
    return doc


def sensor_extractor_from_doc(doc: dict[str, object]) -> SensorFeatureExtractor:
    """Rebuild from :func:`sensor_extractor_to_doc` output (hostile input).

    Raises:
        DetectMisuse: wrong keys, shapes or values (a state saved before the v2 features
            lacks keys: train again).
    """
    try:
        channels = doc["channels"]
        if not isinstance(channels, list) or not 1 <= len(channels) <= 256:
            raise DetectMisuse("channels must be a list of 1..256 names")
        config = doc["config"]
        if not isinstance(config, dict):
            raise DetectMisuse("config must be an object")
        extractor = SensorFeatureExtractor(
            [str(c) for c in channels], SensorFeatureConfig(**config)
        )
        c = len(extractor.channels)
        raw = extractor.config.raw_rows
        extractor.reset_stream()
        for name in _RAW_ARRAYS if raw else _SENSOR_ARRAYS:
            key = name.lstrip("_")
            if key in _V3_ARRAYS and key not in doc and "zrough" not in extractor.config.families:
                # a state saved before zrough existed: neutral values, never used
                setattr(extractor, name, np.zeros(c) if key == "rough_center" else np.ones(c))
                continue
            if key in _V4_ARRAYS and key not in doc and "lagz" not in extractor.config.families:
                setattr(extractor, name, np.zeros(c) if key == "lagz_center" else np.ones(c))
                continue
            if key not in doc:
                raise DetectMisuse(f"{key!r} is missing (a state from before feature "
                                   "families v2? train again)")
            value = np.asarray(doc[key], dtype=np.float64)
            rows = _SHAPES.get(name)
            if rows == -1:
                expected: tuple[int, ...] = (c, c)
            elif rows is not None:
                expected = (rows, c)
            elif name in ("_history", "_pending"):
                value = value.reshape(-1, c)
                expected = value.shape
            else:
                expected = (c,)
            if value.shape != expected or not np.isfinite(value).all():
                raise DetectMisuse(f"{key}: shape {value.shape}, expected {expected}")
            if not (np.abs(value) <= 1e9).all():
                raise DetectMisuse(f"{key}: values beyond ±1e9")
            if name in _POSITIVE and not (value >= 1e-9).all():
                raise DetectMisuse(f"{key}: scales must be at least 1e-9")
            if name in _NON_NEGATIVE and not (value >= 0).all():
                raise DetectMisuse(f"{key}: must not be negative")
            setattr(extractor, name, value)
        if not raw:
            for key, rows in _OPTIONAL.items():
                item = doc.get(key)
                if item is None:
                    continue
                value = np.asarray(item, dtype=np.float64)
                expected = (c,) if rows is None else (rows, c)
                if value.shape != expected or not (np.abs(value) <= 1e9).all():
                    raise DetectMisuse(f"{key}: shape {value.shape}, expected {expected}")
                if key in ("local", "rough_ref") and not (value >= 1e-9).all():
                    raise DetectMisuse(f"{key}: scales must be at least 1e-9")
                if key == "yard" and not (value[[1, 3]] >= 0).all():
                    raise DetectMisuse("yard: variances must not be negative")
                setattr(extractor, "_" + key, value)
            hold = float(doc.get("hold", 0.0))  # type: ignore[arg-type]
            if not 0.0 <= hold <= 1e9:
                raise DetectMisuse("hold must be in 0..1e9")
            extractor._hold = hold
            step_hold = float(doc.get("step_hold", 0.0))  # type: ignore[arg-type]
            if not 0.0 <= step_hold <= 1e9:
                raise DetectMisuse("step_hold must be in 0..1e9")
            extractor._step_hold = step_hold
            yard_n = float(doc.get("yard_n", 0.0))  # type: ignore[arg-type]
            if not 0.0 <= yard_n <= 1e15:
                raise DetectMisuse("yard_n must be in 0..1e15")
            extractor._yard_n = yard_n
            rough_n = float(doc.get("rough_n", 0.0))  # type: ignore[arg-type]
            if not 0.0 <= rough_n <= 1e15:
                raise DetectMisuse("rough_n must be in 0..1e15")
            extractor._rough_n = rough_n
    except (KeyError, TypeError, ValueError) as error:
        raise DetectMisuse(f"bad sensor feature state: {error!r}") from None
    extractor._fitted = True
    return extractor

