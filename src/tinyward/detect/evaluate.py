"""Evaluate detectors on packet captures and sensor streams, by a fixed protocol.

Packets (MQTTset, see ``../shared/data/README.md``):

1. Features of ``benign-5mb-train`` from an empty state; the detector is fitted on
   them (benign only; it picks its own threshold on a held-out part).
2. ``benign-5mb-test`` and every attack file (both splits, each file its own stream)
   are scored on a *copy* of the trained feature state, shifted in time to start one
   second after the training stream ended — "each attack as its own stream continuing
   from the trained state". No warm-up is excluded.
3. Figures: ROC AUC and TPR at 1 % and 0.1 % FPR (thresholds from the benign test
   scores: an oracle that no device has), per attack type and overall; the detector's
   own threshold gives the false alarms per hour of benign test traffic. Run once as
   captured and once with TCP option bytes removed from every packet (only the second
   says much: see the README).
4. Honest thresholds (:mod:`.threshold`): for each requested rate in :data:`FPRS` the
   threshold the detector's own calibration chose (fitted on the earlier 75 % of the
   training stream, calibrated on its last 25 % and on the same 25 % re-scored as
   new peers, :mod:`.newpeers`), its realised FPR on the benign test
   (never used to fit or calibrate) with a Clopper-Pearson interval and whether it is
   within 2x of the request, and the TPR per attack at that threshold (``thresholds``).

Sensors (SKAB, see :func:`sensor_files`): features of the first 60 % of
``anomaly-free.csv`` and of the anomaly-free prefixes of the even-numbered runs train;
the remaining 40 % and the odd-numbered runs' prefixes are scored clean (benign) and
with tampering injected by :mod:`.tamper` (attack; a window counts as attacked when at
least half its samples lie in a tampered segment and at least one was altered:
:func:`.tamper.window_kind`), in :data:`TAMPER_ROUNDS` seeded rounds per stream.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyward._fsutil import atomic_write
from tinyward.detect.netfeatures import NetFeatureConfig, NetFeatureExtractor
from tinyward.detect.newpeers import new_peer_rows
from tinyward.detect.pcap import read_packets
from tinyward.detect.sensorfeatures import (
    DEFAULT_FAMILIES,
    SKAB_CHANNELS,
    SensorFeatureConfig,
    SensorFeatureExtractor,
    read_sensor_csv,
)
from tinyward.detect.tamper import INJECTED_NOTE, TAMPER_KINDS, tamper_stream, window_kind
from tinyward.detect.threshold import Calibration, realised_fpr

ATTACKS = ("bruteforce", "flood", "malariados", "malformed", "slowite")
FPRS = (0.01, 0.001)
#: Injection rounds per sensor test stream (as :data:`tinyward.detect.sensordev.ROUNDS`).
TAMPER_ROUNDS = 6

Progress = Callable[[str, int, int], None]  # (task, advance, total)


# ------------------------------------------------------------------------- metrics
def tpr_at_fpr(benign: np.ndarray, attack: np.ndarray, fpr: float) -> float:
    """Fraction of attack scores above the threshold that lets at most ``fpr`` of the
    benign scores through (strictly greater than the (k+1)-th largest benign score)."""
    if len(attack) == 0 or len(benign) == 0:
        return math.nan
    ordered = np.sort(benign)[::-1]
    allowed = math.floor(fpr * len(ordered))
    threshold = ordered[min(allowed, len(ordered) - 1)]
    return float(np.mean(attack > threshold))


def roc_auc(benign: np.ndarray, attack: np.ndarray) -> float:
    """Probability that an attack score exceeds a benign one (ties count half)."""
    if len(attack) == 0 or len(benign) == 0:
        return math.nan
    scores = np.concatenate([benign, attack])
    ranks = _average_ranks(scores)
    n_b, n_a = len(benign), len(attack)
    return float((ranks[n_b:].sum() - n_a * (n_a + 1) / 2) / (n_a * n_b))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def roc_curve(benign: np.ndarray, attack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold."""
    thresholds = np.unique(np.concatenate([benign, attack]))[::-1]
    b, a = np.sort(benign), np.sort(attack)
    fpr = 1 - np.searchsorted(b, thresholds, side="right") / len(b)
    tpr = 1 - np.searchsorted(a, thresholds, side="right") / len(a)
    return np.r_[0.0, fpr, 1.0], np.r_[0.0, tpr, 1.0]


def summarise(
    benign: np.ndarray,
    attacks: dict[str, np.ndarray],
    *,
    threshold: float | None = None,
    benign_hours: float | None = None,
) -> dict[str, Any]:
    """ROC AUC and TPR at each FPR in :data:`FPRS`, per attack and overall; with the
    detector's ``threshold``, its detection rate and false alarms per hour."""

    def one(attack: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(attack), "roc_auc": roc_auc(benign, attack)}
        for fpr in FPRS:
            out[f"tpr_at_{fpr:g}"] = tpr_at_fpr(benign, attack, fpr)
        if threshold is not None:
            out["detected_at_threshold"] = (
                float(np.mean(attack > threshold)) if len(attack) else math.nan
            )
        return out

    result: dict[str, Any] = {"per_attack": {name: one(s) for name, s in attacks.items()}}
    everything = np.concatenate(list(attacks.values())) if attacks else np.zeros(0)
    result["overall"] = one(everything)
    result["benign_n"] = len(benign)
    if threshold is not None:
        alarms = int(np.sum(benign > threshold))
        result["benign_false_alarms"] = alarms
        result["benign_fpr_at_threshold"] = alarms / max(len(benign), 1)
        if benign_hours:
            result["false_alarms_per_hour"] = alarms / benign_hours
    return result


def own_thresholds(
    benign: np.ndarray,
    attacks: dict[str, np.ndarray],
    calibrations: dict[float, Calibration],
) -> dict[str, Any]:
    """For each requested rate: the detector's calibrated threshold, its realised FPR on
    the held-out ``benign`` scores (Clopper-Pearson 95 % interval, within 2x or not) and
    the TPR per attack and overall at that threshold. Keys are the rates as ``f"{r:g}"``."""
    everything = np.concatenate(list(attacks.values())) if attacks else np.zeros(0)
    out: dict[str, Any] = {}
    for rate, cal in calibrations.items():
        entry: dict[str, Any] = {"calibration": cal.to_json()}
        if len(benign):
            entry["realised"] = realised_fpr(benign, cal.threshold, rate).to_json()
        tpr = {name: float(np.mean(s > cal.threshold)) if len(s) else math.nan
               for name, s in attacks.items()}
        tpr["overall"] = float(np.mean(everything > cal.threshold)) if len(everything) else math.nan
        entry["tpr"] = tpr
        out[f"{rate:g}"] = entry
    return out


def detector_calibrations(
    detector: Any, rates: tuple[float, ...] = FPRS
) -> dict[float, Calibration]:
    """The detector's own threshold at each rate (:meth:`threshold_at` after a fit), or its
    one saved threshold at its own rate when that is all there is."""
    out: dict[float, Calibration] = {}
    ask = getattr(detector, "threshold_at", None)
    for rate in rates:
        cal = ask(rate) if ask is not None else None
        if cal is not None:
            out[rate] = cal
    own = getattr(detector, "calibration", None)
    if not out and own is not None:
        out[own.target_fpr] = own
    return out


# ------------------------------------------------------------------------- packet data
@dataclass
class PacketStreams:
    """Feature matrices for one view (as captured or TCP options removed)."""

    strip_tcp_options: bool
    train: np.ndarray
    benign: np.ndarray
    attacks: dict[str, np.ndarray]
    benign_hours: float
    feature_us_per_packet: float
    state_bytes: int
    extractor: NetFeatureExtractor
    files: dict[str, list[str]] = field(default_factory=dict)
    #: The training stream's calibration stretch re-extracted as new peers
    #: (:func:`tinyward.detect.newpeers.new_peer_rows`); every threshold must hold on it too.
    new_peers: np.ndarray | None = None


def packet_files(data_dir: Path) -> dict[str, list[Path]]:
    """The MQTTset files of the protocol: 'train', 'benign' and one entry per attack."""
    data_dir = Path(data_dir)
    files: dict[str, list[Path]] = {
        "train": [data_dir / "benign-5mb" / "benign-5mb-train.pcap"],
        "benign": [data_dir / "benign-5mb" / "benign-5mb-test.pcap"],
    }
    for attack in ATTACKS:
        files[attack] = sorted((data_dir / attack).glob(f"{attack}-*.pcap*"))
    return files


def packet_streams(
    data_dir: Path,
    *,
    strip_tcp_options: bool,
    config: NetFeatureConfig | None = None,
    progress: Progress | None = None,
) -> PacketStreams:
    """Extract features for the whole protocol (see the module docstring).

    Raises:
        PcapError: a capture is missing or unreadable.
    """
    files = packet_files(data_dir)
    extractor = NetFeatureExtractor(config)

    def read(path: Path) -> list[Any]:
        packets = read_packets(path, strip_tcp_options=strip_tcp_options)
        if progress:
            progress(f"read {path.name}", 1, 0)
        return packets

    train_packets = read(files["train"][0])
    started = time.perf_counter()
    train = extractor.transform(train_packets)
    elapsed = time.perf_counter() - started
    benign_packets = read(files["benign"][0])
    _, benign = extractor.continue_with(benign_packets)
    attacks = {}
    for attack in ATTACKS:
        parts = [extractor.continue_with(read(path))[1] for path in files[attack]]
        attacks[attack] = np.vstack(parts) if parts else np.zeros((0, train.shape[1]))
    hours = (benign_packets[-1].ts - benign_packets[0].ts) / 3600 if benign_packets else 0.0
    return PacketStreams(
        strip_tcp_options,
        train,
        benign,
        attacks,
        hours,
        1e6 * elapsed / max(len(train_packets), 1),
        extractor.state_bytes(),
        extractor,
        {k: [str(p) for p in v] for k, v in files.items()},
        new_peer_rows(train_packets, 0.25, config),
    )


def evaluate_scores(
    detector: Any,
    streams: PacketStreams | SensorStreams,
    *,
    fit: bool = True,
    seed: int = 0,
    single_rows: int = 300,
    threshold_method: str = "pot",
) -> dict[str, Any]:
    """Fit ``detector`` (a :class:`~tinyward.detect.models.Detector`) on the training
    features, score the benign and attack streams and summarise (``thresholds``: the
    detector's own threshold at each rate of :data:`FPRS`, realised on the benign test).

    Timing: ``score_us_per_vector`` scores the first ``single_rows`` benign vectors one
    call per vector, as a device would (batch scoring, which numpy makes much cheaper
    per row, is reported as ``batch_score_us_per_vector``).
    """
    if fit:
        new_peers = getattr(streams, "new_peers", None)
        extra = {"new_peers": new_peers} if new_peers is not None and (
            threshold_method == "pot") else {}
        detector.fit(streams.train, seed=seed, threshold_method=threshold_method, **extra)
    started = time.perf_counter()
    benign = np.asarray(detector.score(streams.benign), dtype=np.float64)
    batch_us = 1e6 * (time.perf_counter() - started) / max(len(streams.benign), 1)
    rows = streams.benign[:single_rows]
    started = time.perf_counter()
    for i in range(len(rows)):
        detector.score(rows[i : i + 1])
    score_us = 1e6 * (time.perf_counter() - started) / max(len(rows), 1)
    attacks = {
        name: np.asarray(detector.score(x), dtype=np.float64) if len(x) else np.zeros(0)
        for name, x in streams.attacks.items()
    }
    result = summarise(
        benign, attacks, threshold=float(detector.threshold), benign_hours=streams.benign_hours
    )
    result.update(
        detector=getattr(detector, "name", type(detector).__name__),
        model_bytes=int(detector.model_bytes()),
        ops_per_inference=int(detector.ops_per_inference()),
        score_us_per_vector=score_us,
        batch_score_us_per_vector=batch_us,
        feature_us_per_vector=streams.feature_us_per_packet,
        us_per_packet=score_us + streams.feature_us_per_packet,
        state_bytes=streams.state_bytes,
        threshold=float(detector.threshold),
    )
    result["thresholds"] = own_thresholds(benign, attacks, detector_calibrations(detector))
    result["_scores"] = {"benign": benign, **attacks}  # for plots; dropped from JSON
    return result


# ------------------------------------------------------------------------- sensor data
@dataclass
class SensorStreams:
    train: np.ndarray
    benign: np.ndarray
    attacks: dict[str, np.ndarray]
    benign_hours: float
    feature_us_per_packet: float  # per window
    state_bytes: int
    extractor: SensorFeatureExtractor
    note: str = INJECTED_NOTE
    injections: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, list[str]] = field(default_factory=dict)
    #: The lagz_alarm column of train, benign and each attack (the per-channel alarm of
    #: :mod:`.sensorfusion`), kept apart so that the plain detectors see the defaults.
    lagz: dict[str, np.ndarray] = field(default_factory=dict)


def with_lagz(streams: SensorStreams) -> SensorStreams:
    """``streams`` with the lagz alarm as the last column, for
    :class:`~tinyward.detect.sensorfusion.ChannelAlarmFused`."""
    def add(x: np.ndarray, name: str) -> np.ndarray:
        return np.column_stack([x, streams.lagz[name]])
    return dataclasses.replace(
        streams, train=add(streams.train, "train"), benign=add(streams.benign, "benign"),
        attacks={k: add(v, k) for k, v in streams.attacks.items()})


def sensor_files(skab: Path) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """Benign (train, test) streams of SKAB as (name, samples) lists.

    A CSV: its first 60 % trains, the rest tests. The SKAB folder: additionally the
    anomaly-free prefix (rows before the first ``anomaly=1``) of every run, even-numbered
    runs (in sorted order) for training and odd-numbered ones for testing.

    Raises:
        CsvError: a CSV is unreadable.
    """
    skab = Path(skab)
    main = skab / "anomaly-free" / "anomaly-free.csv" if skab.is_dir() else skab
    values = read_sensor_csv(main, SKAB_CHANNELS).values
    cut = int(len(values) * 0.6)
    train = [(f"{main.name}[:{cut}]", values[:cut])]
    test = [(f"{main.name}[{cut}:]", values[cut:])]
    if skab.is_dir():
        runs = sorted(p for p in skab.glob("*/*.csv") if p.parent.name != "anomaly-free")
        for i, path in enumerate(runs):
            table = read_sensor_csv(path, SKAB_CHANNELS)
            labels = table.labels if table.labels is not None else np.zeros(len(table.values))
            first = int(np.argmax(labels > 0)) if (labels > 0).any() else len(labels)
            if first < 450:
                continue  # too short for a clean lead and one injection
            name = f"{path.parent.name}/{path.name}[:{first}]"
            (train if i % 2 == 0 else test).append((name, table.values[:first]))
    return train, test


def sensor_state_bytes(extractor: SensorFeatureExtractor) -> int:
    """The stream state the device holds: the exported C struct
    (:func:`tinyward.detect.sensorfeatures_c.state_bytes`, doubles; the test of the export
    checks it against ``sizeof``). It replaces a float32 formula of the first extractor
    (30,112 B at 8 channels) that no longer described any build."""
    from tinyward.detect.sensorfeatures_c import state_bytes

    cfg = extractor.config
    return state_bytes(len(extractor.channels), cfg.window, cfg.history,
                       v2=hasattr(extractor, "quantum"))


def sensor_streams(
    skab: Path, *, seed: int = 0, sample_seconds: float = 1.0, rounds: int = TAMPER_ROUNDS
) -> SensorStreams:
    """Benign and tampered windows by the sensor protocol (see :func:`sensor_files`).

    Every stream starts from a fresh stream state. Tampering is injected into each test
    stream (kinds in turn, seeded): several segments into the long anomaly-free part,
    one into each run prefix; ``rounds`` times, each round a fresh copy of the clean
    stream with seed ``seed + stream + 100 * round`` and the kinds shifted by one, so
    that each kind lands on ~25 segments over every channel rather than on 4-5 (with
    one round, the AUC of a kind hinged on which 4 or 5 channels it happened to hit).

    Raises:
        CsvError: a CSV is unreadable.
    """
    train_streams, test_streams = sensor_files(skab)
    # the default families, plus lagz (last in FAMILIES order) split off below
    extractor = SensorFeatureExtractor(
        SKAB_CHANNELS, SensorFeatureConfig(families=(*DEFAULT_FAMILIES, "lagz")))
    started = time.perf_counter()
    train = extractor.fit([v for _, v in train_streams])
    per_window = 1e6 * (time.perf_counter() - started) / max(len(train), 1)
    window = extractor.config.window
    benign_rows: list[np.ndarray] = []
    attacks: dict[str, list[np.ndarray]] = {kind: [] for kind in TAMPER_KINDS}
    injections: list[dict[str, Any]] = []
    samples = 0
    for number, (name, values) in enumerate(test_streams):
        clean = extractor.copy()
        clean.reset_stream()
        benign_rows.append(clean.transform(values))
        samples += len(values)
        long_stream = len(values) > 2000
        for round_ in range(rounds):
            tampered = tamper_stream(
                values,
                seed=seed + number + 100 * round_,
                lead=700 if long_stream else 330,
                first_kind=round_ if long_stream else number + round_,
            )
            scorer = extractor.copy()
            scorer.reset_stream()
            features = scorer.transform(tampered.values)
            for row, end in zip(features, scorer.last_window_ends, strict=True):
                kind = window_kind(tampered, max(0, int(end) - window), int(end))
                if kind is not None:
                    attacks[kind].append(row)
            injections += [{"stream": name, "round": round_, **vars(i)}
                           for i in tampered.injections]
    stacked = {k: np.vstack(v) if v else np.zeros((0, train.shape[1])) for k, v in attacks.items()}
    state = sensor_state_bytes(extractor)
    benign_all = np.vstack(benign_rows)
    lagz = {"train": train[:, -1], "benign": benign_all[:, -1],
            **{k: v[:, -1] for k, v in stacked.items()}}
    train, benign_all = train[:, :-1], benign_all[:, :-1]
    stacked = {k: v[:, :-1] for k, v in stacked.items()}
    return SensorStreams(
        train,
        benign_all,
        stacked,
        samples * sample_seconds / 3600,
        per_window,
        state,
        extractor,
        injections=injections,
        files={"train": [n for n, _ in train_streams], "test": [n for n, _ in test_streams]},
        lagz=lagz,
    )


# ------------------------------------------------------------------------- output
def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return None if math.isnan(value) else value
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (:func:`tinyward._fsutil.atomic_write`), creating
    the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(to_jsonable(obj), indent=2).encode("utf-8"))


#: Okabe-Ito colours (distinguishable with colour-blindness), then line styles: a
#: detector keeps one (colour, style) pair in every panel; 32 pairs before any repeats.
_ROC_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00",
                "#000000", "#F0E442")
_ROC_STYLES = ("-", "--", "-.", ":")


def roc_figure(curves: dict[str, dict[str, np.ndarray]], title: str) -> Any:
    """The ROC figure of :func:`plot_roc` (a matplotlib Figure; tests inspect it).

    One panel per attack, so that 20-odd curves do not share one set of axes: each panel
    has one curve per detector, the same colour and style in every panel, and the legend
    sits under the panels, never over a curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(curves)
    # A word every label ends with (the view, e.g. "tcp-options-removed") goes in the title.
    last_words = {label.rsplit(" ", 1)[-1] for label in labels if " " in label}
    if len(labels) > 1 and len(last_words) == 1 and all(" " in label for label in labels):
        common = last_words.pop()
        title = f"{title} ({common})"
        names = {label: label.rsplit(" ", 1)[0] for label in labels}
    else:
        names = {label: label for label in labels}
    attacks = sorted({name for scores in curves.values() for name, values in scores.items()
                      if name != "benign" and len(values)})
    columns = min(3, max(1, len(attacks)))
    rows = max(1, math.ceil(len(attacks) / columns))
    legend_rows = math.ceil(len(labels) / 3)
    legend_inches = 0.3 * legend_rows + 0.2
    fig, axes = plt.subplots(rows, columns,
                             figsize=(4.2 * columns, 3.3 * rows + legend_inches + 0.6),
                             sharex=True, sharey=True, squeeze=False)
    style = {label: (_ROC_COLOURS[i % len(_ROC_COLOURS)],
                     _ROC_STYLES[(i // len(_ROC_COLOURS)) % len(_ROC_STYLES)])
             for i, label in enumerate(labels)}
    handles: dict[str, Any] = {}
    for ax, attack in zip(axes.flat, attacks, strict=False):
        for label in labels:
            scores = curves[label]
            values = scores.get(attack)
            if values is None or len(values) == 0:
                continue
            fpr, tpr = roc_curve(scores["benign"], values)
            colour, line = style[label]
            (handles[label],) = ax.step(np.maximum(fpr, 1e-5), tpr, where="post", color=colour,
                                        linestyle=line, linewidth=1.5, label=names[label])
        for rate in FPRS:
            ax.axvline(rate, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlim(1e-4, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3, which="major")
        ax.set_title(attack, fontsize=10)
    for index, ax in enumerate(axes.flat):
        if index >= len(attacks):
            ax.set_visible(False)
        elif index + columns >= len(attacks):  # the lowest panel of its column
            ax.set_xlabel("false-positive rate (benign)", fontsize=9)
            ax.xaxis.set_tick_params(labelbottom=True)
        if index % columns == 0:
            ax.set_ylabel("true-positive rate", fontsize=9)
    fig.suptitle(f"{title}\ndotted lines: 1 % and 0.1 % false positives", fontsize=11)
    fig.legend([handles[label] for label in labels if label in handles],
               [names[label] for label in labels if label in handles], loc="lower center",
               ncol=min(3, max(1, len(handles))), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, legend_inches / fig.get_figheight(), 1, 1))
    return fig


def plot_roc(curves: dict[str, dict[str, np.ndarray]], path: Path, title: str) -> None:
    """ROC curves (log-scale FPR, where 0.1 % is visible): one panel per attack, one
    curve per result name in each (:func:`roc_figure`).

    ``curves`` maps a label to its scores dict ({"benign": …, attack: …}).
    """
    import matplotlib.pyplot as plt

    fig = roc_figure(curves, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
