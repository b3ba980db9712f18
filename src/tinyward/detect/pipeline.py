"""Train a detector on benign inputs, save it, score new inputs: the detect pipeline.

``tinyward detect train/score/export/export-features`` are thin layers over this module::

    from tinyward.detect.pipeline import load_model, save_model, score_file, train

    model = train([Path("benign.pcap")], kind="mahalanobis-int8", strip_tcp_options=True)
    save_model(model, Path("model.json"))
    scored = score_file(load_model(Path("model.json")), Path("suspicious.pcap"))
    print(scored.alarms.sum(), "alarms in", len(scored.scores), scored.unit)

A **model file** is one JSON document (:mod:`tinyward.detect._modelfile`): the detector,
and under ``features`` the feature extractor's configuration and trained state, so that
scoring continues the stream where training left it. Files written before the state moved
into the model file keep it next to it, in ``MODEL.features.json``; :func:`load_model`
still reads that file, with the same size limit as a model file, and says what is wrong
when it is missing or bad.

Inputs are captures (``pcap``/``pcapng``; features of :mod:`tinyward.detect.netfeatures`)
or sensor CSVs (any delimited file: chosen channels or every numeric column;
:mod:`tinyward.detect.sensorfeatures`). Sensor options (:class:`SensorOptions`): label and
time columns, window and step, feature families, a raw-row model, score smoothing.
Constant and near-constant channels are dropped at training with a
:class:`~tinyward.detect.sensorfeatures.SensorChannelWarning` naming them. Every sensor
score maps back to an input row: a window's score belongs to its LAST row (``Scored.rows``
is that row's 0-based data row; ``Scored.lines`` its file line).
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyward.detect._modelfile import LIMITS, read_model, write_model
from tinyward.detect.errors import CsvError, DetectError, DetectMisuse, ModelFileError, PcapError
from tinyward.detect.evaluate import to_jsonable
from tinyward.detect.export_c import ExportedFiles, export_c
from tinyward.detect.fusion import FusedNetDetector
from tinyward.detect.models import (
    Detector,
    Int8AutoencoderDetector,
    Int8MahalanobisDetector,
    detector_from_doc,
    make_detector,
)
from tinyward.detect.netfeatures import (
    N_FEATURES,
    NetFeatureExtractor,
    extractor_from_doc,
    extractor_to_doc,
)
from tinyward.detect.newpeers import new_peer_rows
from tinyward.detect.pcap import Packet, read_packets
from tinyward.detect.sensorfeatures import (
    DEFAULT_FAMILIES,
    SensorChannelWarning,
    SensorFeatureConfig,
    SensorFeatureExtractor,
    read_sensor_csv,
    screen_channels,
    sensor_extractor_from_doc,
    sensor_extractor_to_doc,
)
from tinyward.detect.threshold import Policy, calibrate

if TYPE_CHECKING:
    from tinyward.detect.netfeatures_c import NetFeatureFiles

__all__ = [
    "Model",
    "PacketFeatures",
    "Progress",
    "Scored",
    "SensorFeatures",
    "export_detector_c",
    "export_features_c",
    "legacy_features_path",
    "load_model",
    "save_model",
    "score_file",
    "train",
    "write_scores_csv",
]

#: ``progress(description, total)`` announces a step and returns a function that advances
#: it by n units (packets); ``total`` is None when unknown. The CLI draws a progress bar.
Progress = Callable[[str, int | None], Callable[[int], None]]


def _quiet(description: str, total: int | None) -> Callable[[int], None]:
    return lambda n: None


@dataclass
class PacketFeatures:
    """Packet features: the trained extractor and whether TCP options were removed."""

    extractor: NetFeatureExtractor
    strip_tcp_options: bool = False

    def to_doc(self) -> dict[str, Any]:
        return {"type": "packets", "strip_tcp_options": self.strip_tcp_options,
                "state": extractor_to_doc(self.extractor)}


@dataclass(frozen=True)
class SensorOptions:
    """How ``train`` reads sensor CSVs and shapes the features.

    ``channels`` None: every numeric column but the label and time columns.
    ``delimiter`` None: sniffed from each file's header. ``smooth``: None,
    ``"ewma:A"`` (scores smoothed by an EWMA with weight A in (0, 1]; the threshold is
    re-chosen on the smoothed benign training scores) or ``"kofn:K/N"`` (an alarm when at
    least K of the last N vectors are above the detector's threshold).
    """

    channels: tuple[str, ...] | None = None
    delimiter: str | None = None
    label_column: str = "anomaly"
    time_column: str | None = None
    window: int = 30
    step: int = 10
    families: tuple[str, ...] = DEFAULT_FAMILIES
    raw_rows: bool = False
    smooth: str | None = None


@dataclass
class Smoother:
    """Score smoothing after the detector (sans-IO): ``kind`` "ewma" (``weight``) or
    "kofn" (``k`` of ``n``); ``threshold`` replaces the detector's for "ewma"."""

    kind: str
    weight: float = 1.0
    k: int = 1
    n: int = 1
    threshold: float | None = None

    @classmethod
    def parse(cls, text: str) -> Smoother:
        """Raises DetectMisuse for a malformed specification."""
        kind, _, arg = text.partition(":")
        try:
            if kind == "ewma":
                weight = float(arg)
                if 0.0 < weight <= 1.0:
                    return cls("ewma", weight=weight)
            elif kind == "kofn":
                k_text, _, n_text = arg.partition("/")
                k, n = int(k_text), int(n_text)
                if 1 <= k <= n <= 10_000:
                    return cls("kofn", k=k, n=n)
        except ValueError:
            pass
        raise DetectMisuse(f"smoothing {text!r}: give 'ewma:A' with 0 < A <= 1 or 'kofn:K/N' "
                           "with 1 <= K <= N <= 10000")

    def apply(self, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """(scores, alarms) of one stream, in order."""
        if self.kind == "ewma":
            out = np.empty_like(scores)
            level = scores[0] if len(scores) else 0.0
            for i, value in enumerate(scores):
                level = level + self.weight * (value - level)
                out[i] = level
            limit = threshold if self.threshold is None else self.threshold
            return out, out > limit
        above = (scores > threshold).astype(np.int64)
        counts = np.convolve(above, np.ones(self.n, dtype=np.int64))[: len(above)]
        return scores, counts >= self.k

    def to_doc(self) -> dict[str, Any]:
        return {"kind": self.kind, "weight": self.weight, "k": self.k, "n": self.n,
                "threshold": self.threshold}

    @classmethod
    def from_doc(cls, doc: Any) -> Smoother:
        if not isinstance(doc, dict) or doc.get("kind") not in ("ewma", "kofn"):
            raise DetectMisuse("'smooth' is not a smoothing specification")
        smoother = (cls.parse(f"ewma:{doc['weight']}") if doc["kind"] == "ewma"
                    else cls.parse(f"kofn:{doc['k']}/{doc['n']}"))
        threshold = doc.get("threshold")
        if threshold is not None:
            if not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
                raise DetectMisuse("'smooth' threshold is not a finite number")
            smoother.threshold = float(threshold)
        return smoother


def _sensor_threshold(benign_scores: np.ndarray, target_fpr: float) -> float:
    """The one place the sensor pipeline chooses a threshold of its own (smoothed scores),
    through the same calibration as every detector (:mod:`tinyward.detect.threshold`):
    the later contiguous stretch of the smoothed benign scores."""
    n = len(benign_scores)
    later = benign_scores[n - max(1, int(n * Policy().fraction)):]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the detector's own calibration already warned
        return calibrate(later, target_fpr, policy=Policy(on_insufficient="warn")).threshold


@dataclass
class SensorFeatures:
    """Sensor window features: the fitted extractor, how to read the CSVs, smoothing."""

    extractor: SensorFeatureExtractor
    delimiter: str | None = ";"
    label_column: str = "anomaly"
    time_column: str | None = None
    smoother: Smoother | None = None
    dropped: tuple[tuple[str, str], ...] = ()

    def to_doc(self) -> dict[str, Any]:
        return {"type": "sensors", "delimiter": self.delimiter,
                "label_column": self.label_column, "time_column": self.time_column,
                "smooth": None if self.smoother is None else self.smoother.to_doc(),
                "dropped": [list(d) for d in self.dropped],
                "state": sensor_extractor_to_doc(self.extractor)}


@dataclass
class Model:
    """A fitted detector with the feature state it was trained on.

    ``n_vectors`` and ``n_features`` give the shape of the benign feature vectors it was
    fitted on (0 when loaded from a file).
    """

    detector: Detector
    features: PacketFeatures | SensorFeatures
    n_vectors: int = 0
    n_features: int = 0
    #: Packet models only: per-class thresholds and the peer/service novelty set
    #: (:mod:`tinyward.detect.fusion`); None for models without them.
    fusion: FusedNetDetector | None = None

    @property
    def unit(self) -> str:
        """What one score is for: ``"packets"`` or ``"windows"``."""
        return "packets" if isinstance(self.features, PacketFeatures) else "windows"


@dataclass
class Scored:
    """The scores of one input; ``problem`` is set when only a first part could be read."""

    scores: np.ndarray
    alarms: np.ndarray
    unit: str
    problem: PcapError | CsvError | None = None
    #: Per packet, True when its peer/service tuple was never seen in training (models
    #: with a novelty set only).
    novel: np.ndarray | None = None
    #: sensors: the 0-based data row and the file line of each vector's last row, and
    #: that row's time-column text when the model names one
    rows: np.ndarray | None = None
    lines: np.ndarray | None = None
    times: list[str] | None = None


def train(
    inputs: Sequence[Path],
    *,
    kind: str = "mahalanobis-int8",
    packets: bool = True,
    strip_tcp_options: bool = False,
    target_fpr: float = 0.001,
    delimiter: str | None = None,
    sensor: SensorOptions | None = None,
    progress: Progress = _quiet,
    on_insufficient: str = "warn",
    novelty: str | None = None,
    per_class: bool = False,
) -> Model:
    """Fit a detector of ``kind`` on BENIGN ``inputs`` only: captures when ``packets``
    (one stream, in order), else sensor CSVs (each file its own stream; rows whose label
    is non-zero are left out, splitting the stream there).

    Packets only: ``novelty`` (``"pair"`` or ``"service"``) learns the peer/service
    novelty set and ``per_class`` the per-protocol-class thresholds
    (:class:`tinyward.detect.fusion.FusedNetDetector`); alarms are then
    ``novel OR score > t[class]``.

    Raises:
        PcapError, CsvError: an input could not be read (the message names it).
        CalibrationRefused: ``on_insufficient="refuse"`` and the later benign rows cannot
            support ``target_fpr`` (:mod:`tinyward.detect.threshold`); with "warn" the
            warning is kept in ``model.detector.calibration.warnings``.
        DetectMisuse: unknown kind, bad sensor options, too little data.
    """
    detector = make_detector(kind)
    features: PacketFeatures | SensorFeatures
    fused_packets: list[Packet] = []
    options = sensor or SensorOptions(delimiter=delimiter)
    extra: dict[str, Any] = {}
    if packets:
        extractor = NetFeatureExtractor()
        rows = []
        for path in inputs:
            pkts = read_packets(path, strip_tcp_options=strip_tcp_options)
            advance = progress(f"features of {Path(path).name}", len(pkts))
            rows.append(extractor.transform(pkts, progress=advance))
            fused_packets += pkts
        X = np.vstack(rows)
        features = PacketFeatures(extractor, strip_tcp_options)
        if len(X) >= 40:  # fewer: fit refuses the split below with its own message
            progress("calibration stretch as new peers", None)
            extra["new_peers"] = new_peer_rows(fused_packets, 0.25)
    else:
        features, streams = _sensor_training(inputs, options)
        progress("sensor window features", None)
        X = features.extractor.fit(streams)
    progress(f"fitting {kind} on {len(X)} benign vectors", None)
    detector.fit(X, target_fpr=target_fpr, on_insufficient=on_insufficient, **extra)
    fusion = None
    if packets and (novelty is not None or per_class):
        progress("novelty set and class thresholds", None)
        fusion = FusedNetDetector(detector, novelty=novelty is not None, per_class=per_class,
                                  granularity=novelty or "pair")
        fusion.fit(X, fused_packets, target_fpr=target_fpr, fit_base=False)
    elif novelty is not None or per_class:
        raise DetectMisuse("novelty and per-class thresholds are for packet models only")
    if isinstance(features, SensorFeatures) and options.smooth is not None:
        smoother = Smoother.parse(options.smooth)
        if smoother.kind == "ewma":
            smoothed = np.concatenate([
                smoother.apply(detector.score(_fresh(features.extractor, s)),
                               detector.threshold)[0]
                for s in streams
            ])
            smoother.threshold = _sensor_threshold(smoothed, target_fpr)
        features.smoother = smoother
    return Model(detector, features, len(X), int(X.shape[1]), fusion)


def _fresh(extractor: SensorFeatureExtractor, values: np.ndarray) -> np.ndarray:
    stream = extractor.copy()
    stream.reset_stream()
    return stream.transform(values)


def _sensor_training(
    inputs: Sequence[Path], options: SensorOptions
) -> tuple[SensorFeatures, list[np.ndarray]]:
    """Read the benign CSVs, screen the channels, build the extractor; return it with the
    benign streams (one per file and unlabelled stretch)."""
    channels = options.channels
    tables = []
    for path in inputs:
        table = read_sensor_csv(path, channels, delimiter=options.delimiter,
                                label_column=options.label_column,
                                time_column=options.time_column)
        channels = table.channels  # every later file must have the first file's channels
        tables.append(table)
    if channels is None:  # read_sensor_csv always names the channels it read
        raise DetectMisuse("no sensor input given")
    streams: list[np.ndarray] = []
    for table in tables:
        if table.labels is None:
            streams.append(table.values)
            continue
        benign = table.labels == 0
        edges = np.flatnonzero(np.diff(np.r_[0, benign.astype(np.int8), 0]))
        streams += [table.values[a:b] for a, b in zip(edges[::2], edges[1::2], strict=True)]
    least = 10 if options.raw_rows else 3 * options.window
    streams = [s for s in streams if len(s) >= least] or streams
    keep, dropped = screen_channels(np.vstack(streams), channels)
    for name, reason in dropped:
        warnings.warn(f"channel {name!r} dropped: {reason}", SensorChannelWarning, stacklevel=3)
    if not keep:
        raise DetectMisuse("every channel is constant or near-constant: nothing to learn")
    config = SensorFeatureConfig(window=options.window, step=options.step,
                                 families=options.families, raw_rows=options.raw_rows,
                                 min_replay_lag=max(60, options.window))
    extractor = SensorFeatureExtractor([channels[i] for i in keep], config)
    features = SensorFeatures(extractor, options.delimiter, options.label_column,
                              options.time_column, None, tuple(dropped))
    return features, [s[:, keep] for s in streams]


def save_model(model: Model, path: Path) -> None:
    """Write ``model`` (detector and feature state) as one file, atomically.

    Raises:
        OSError: the folder is missing or not writable.
    """
    body = dict(model.detector.to_json())
    body["features"] = to_jsonable(model.features.to_doc())
    if model.fusion is not None:
        body["fusion"] = to_jsonable(model.fusion.to_doc())
    write_model(Path(path), model.detector.name, body)


def legacy_features_path(model: Path) -> Path:
    """Where files written before the feature state moved into the model file keep it."""
    return model.with_name(model.name + ".features.json")


def load_model(path: Path) -> Model:
    """Load a model file (hostile input): the detector and its feature state.

    Raises:
        ModelFileError: the model file, or its ``features`` section, is refused.
        DetectError: an older model's ``MODEL.features.json`` is missing, too large or bad.
    """
    path = Path(path)
    kind, doc = read_model(path)
    detector = detector_from_doc(path, kind, doc)
    section = doc.data.get("features")
    if section is not None:
        try:
            features = _features_from_doc(section)
        except DetectMisuse as error:
            raise ModelFileError(
                path, f"'features': not a tinyward feature state: {error}"
            ) from None
    else:
        features = _legacy_features(path)
    fusion = None
    if doc.data.get("fusion") is not None:
        try:
            fusion = FusedNetDetector.from_doc(detector, doc.data["fusion"])
        except DetectMisuse as error:
            raise ModelFileError(path, f"'fusion': {error}") from None
    return Model(detector, features, fusion=fusion)


def _legacy_features(model: Path) -> PacketFeatures | SensorFeatures:
    path = legacy_features_path(model)
    try:
        size = path.stat().st_size
        if size > LIMITS.max_file_bytes:
            raise DetectError(f"{path}: the file is {size} bytes; a feature state is at most "
                              f"{LIMITS.max_file_bytes}: not a tinyward feature state")
        with path.open("rb") as handle:
            raw = handle.read(LIMITS.max_file_bytes + 1)
    except FileNotFoundError:
        raise DetectError(
            f"{model}: holds no feature state, and there is no {path.name} next to it; "
            "train the model again with `tinyward detect train`") from None
    except OSError as error:
        raise DetectError(f"{path}: cannot read the feature state: {error.strerror}") from None
    try:
        return _features_from_doc(json.loads(raw))
    except (ValueError, DetectMisuse, RecursionError) as error:
        raise DetectError(f"{path}: not a tinyward feature state: {error}") from None


def _features_from_doc(doc: Any) -> PacketFeatures | SensorFeatures:
    """Rebuild the feature state (hostile input). Raises DetectMisuse."""
    if not isinstance(doc, dict) or doc.get("type") not in ("packets", "sensors"):
        raise DetectMisuse("unknown feature type")
    state = doc.get("state")
    if not isinstance(state, dict):
        raise DetectMisuse("'state' is missing or not an object")
    if doc["type"] == "packets":
        strip = doc.get("strip_tcp_options", False)
        if not isinstance(strip, bool):
            raise DetectMisuse("'strip_tcp_options' is not true or false")
        return PacketFeatures(extractor_from_doc(state), strip)
    delimiter = doc.get("delimiter", ";")
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise DetectMisuse("'delimiter' is not one character")
    label_column = doc.get("label_column", "anomaly")
    time_column = doc.get("time_column")
    if not isinstance(label_column, str) or not (time_column is None
                                                 or isinstance(time_column, str)):
        raise DetectMisuse("'label_column'/'time_column' are not column names")
    smooth = doc.get("smooth")
    smoother = None if smooth is None else Smoother.from_doc(smooth)
    return SensorFeatures(sensor_extractor_from_doc(state), delimiter, label_column,
                          time_column, smoother)


def score_file(model: Model, input_path: Path, progress: Progress = _quiet) -> Scored:
    """Score ``input_path`` (capture or CSV, as the model was trained), continuing from the
    model's trained feature state (the model itself is not changed).

    A truncated or corrupted input is scored up to the problem, which is returned in
    :attr:`Scored.problem` for the caller to raise once it has kept the scores.
    """
    problem: PcapError | CsvError | None = None
    features = model.features
    if isinstance(features, PacketFeatures):
        extractor = features.extractor  # continue_with works on a copy
        try:
            pkts = read_packets(input_path, strip_tcp_options=features.strip_tcp_options)
        except PcapError as error:
            problem, pkts = error, error.partial
        advance = progress(f"features of {Path(input_path).name}", len(pkts))
        X = extractor.continue_with(pkts)[1] if pkts else np.zeros((0, N_FEATURES))
        advance(len(pkts))
        if model.fusion is not None:
            scores = model.detector.score(X) if len(X) else np.zeros(0)
            alarms = model.fusion.alarms(X, pkts) if len(X) else np.zeros(0, dtype=bool)
            novel = (model.fusion.novelty.novel(pkts) if model.fusion.novelty is not None
                     else None)
            return Scored(scores, alarms, model.unit, problem, novel=novel)
    else:
        return _score_sensors(model, features, input_path)
    scores = model.detector.score(X) if len(X) else np.zeros(0)
    return Scored(scores, scores > model.detector.threshold, model.unit, problem)


def _score_sensors(model: Model, features: SensorFeatures, input_path: Path) -> Scored:
    """A sensor CSV is its own recording: it starts a fresh stream (scales and fits from
    training; no baseline, history or CUSUM carried over from the training file, which
    would set every level against another recording's and alarm on a clean start)."""
    problem: CsvError | None = None
    sensor = copy.deepcopy(features.extractor)
    sensor.reset_stream()
    table = None
    try:
        table = read_sensor_csv(input_path, sensor.channels, delimiter=features.delimiter,
                                label_column=features.label_column,
                                time_column=features.time_column)
        values, lines = table.values, table.lines
    except CsvError as error:
        problem = error
        values = np.asarray(error.partial, dtype=np.float64).reshape(-1, len(sensor.channels))
        lines = None
    X = sensor.transform(values) if len(values) else np.zeros((0, sensor.n_features))
    rows = sensor.last_window_ends - 1 if len(X) else np.zeros(0, dtype=np.int64)
    scores = model.detector.score(X) if len(X) else np.zeros(0)
    threshold = model.detector.threshold
    if features.smoother is not None and len(scores):
        scores, alarms = features.smoother.apply(scores, threshold)
    else:
        alarms = scores > threshold
    return Scored(scores, alarms, model.unit, problem, rows=rows,
                  lines=None if lines is None else lines[rows],
                  times=(None if table is None or table.times is None
                         else [table.times[r] for r in rows]))


def write_scores_csv(scored: Scored, path: Path) -> None:
    """Write ``index,score,alarm`` per packet or window; for sensors also ``row`` (the
    0-based data row of the window's last row), ``line`` (its file line) and, when the
    model names a time column, ``time``."""
    extra = []
    if scored.rows is not None:
        extra.append(("row", [str(int(r)) for r in scored.rows]))
        if scored.lines is not None:
            extra.append(("line", [str(int(x)) for x in scored.lines]))
        if scored.times is not None:
            extra.append(("time", [t.replace(",", " ") for t in scored.times]))
    header = ",".join(["index", "score", "alarm", *(name for name, _ in extra)])
    Path(path).write_text(
        header + "\n"
        + "".join(
            ",".join([str(i), f"{s:.9g}", str(int(a)), *(col[i] for _, col in extra)]) + "\n"
            for i, (s, a) in enumerate(zip(scored.scores, scored.alarms, strict=True))
        )
    )


def export_features_c(model: Model, out_dir: Path, prefix: str = "tw_nf") -> NetFeatureFiles:
    """Write the model's packet feature state machine as C99 (``prefix``.h and .c),
    starting from the model's trained feature state.

    Raises:
        DetectMisuse: a sensor model (only packet features export).
    """
    from tinyward.detect.netfeatures_c import export_netfeatures_c

    if not isinstance(model.features, PacketFeatures):
        raise DetectMisuse("a sensor model; only packet features export")
    extractor = model.features.extractor
    return export_netfeatures_c(out_dir, extractor.config, prefix, state=extractor)


def export_detector_c(detector: Detector, out_dir: Path, *, prefix: str = "tinyward_detector",
                      feature_names: Sequence[str] | None = None) -> ExportedFiles:
    """Write an int8 detector as one C99 header and one source file.

    Raises:
        DetectMisuse: a float detector (only the ``-int8`` kinds export), or a bad prefix.
    """
    if not isinstance(detector, (Int8AutoencoderDetector, Int8MahalanobisDetector)):
        raise DetectMisuse(
            f"holds a float {detector.name!r} detector; only int8 detectors export to C "
            "(train 'autoencoder-int8' or 'mahalanobis-int8')"
        )
    return export_c(detector, out_dir, prefix=prefix,
                    feature_names=None if feature_names is None else list(feature_names))
