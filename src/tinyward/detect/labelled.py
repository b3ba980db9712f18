"""``detect eval`` on any labelled data: a capture with per-frame labels, or a sensor CSV
with a label column, scored by a trained model file.

**Frames are numbered from 1, as Wireshark numbers them** (pcap: records in file order;
pcapng: packet blocks in file order). Every frame gets an output row: frames the reader
skips (non-IP, malformed or truncated IP) get no score and a reason, and are counted in
the summary ("N frames skipped: ..."), never silently dropped.

**Label file** (UTF-8 text), one of two forms, told apart by the first line:

- *one label per line*: line i is the label of frame i; nothing else on the line;
- *CSV*: a header line naming the columns ``frame`` and ``label`` (comma-separated,
  other columns ignored), then one row per frame in any order; every frame from 1 to the
  last must appear exactly once.

A label ``0``, ``benign`` or ``normal`` (any case) is benign; anything else (``1``,
``attack``, ``bruteforce``, …) is an attack, reported per label (``1`` is reported as
``attack``). The labels must cover exactly the capture's frames; any other length is
refused. Labels are at most 64 printable characters without commas.

For a sensor CSV the label column (default ``anomaly``; 0 is benign, anything else an
attack) is read with the sensor channels; a window counts as attacked when at least
half its rows are, and each output row names the window's first and last data row
(1-based, header not counted).

**The model's own alarm rule, as ``detect score`` applies it** (:func:`.pipeline.score_file`):
a packet model with a novelty set or per-class thresholds is scored by its fused score
(``z``, plus 10⁶ for a novel peer; alarm = ``novel OR score > t_c``), and a sensor CSV
starts a fresh stream from the trained scales, with the model's smoothing (EWMA: the
smoothed score against its own threshold; k of n: the alarms of the rule). Before,
``eval`` scored the base detector's raw score against its global threshold and carried
the training file's stream state into the CSV, so it judged another rule than the one the
device runs.

Metrics: ROC AUC and TPR at 1 % / 0.1 % FPR of the labelled benign frames (an oracle
threshold), and at the model's **own** alarm rule the TPR per label, precision, recall and
F1 over all rows (attack = positive), and the realised FPR on the benign frames with a
Clopper-Pearson interval next to the rate the model was calibrated for (:mod:`.threshold`).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyward.detect.errors import LabelFileError
from tinyward.detect.evaluate import summarise
from tinyward.detect.threshold import realised_fpr

__all__ = [
    "BENIGN_LABELS",
    "LabelledScores",
    "evaluate_labelled",
    "parse_labels",
    "read_labels",
    "score_capture_by_frame",
    "score_csv_by_window",
    "write_rows_csv",
]

BENIGN_LABELS = frozenset({"0", "benign", "normal"})
MAX_LABEL_FILE_BYTES = 512 * 1024 * 1024
MAX_FRAMES = 50_000_000
_LABEL = re.compile(r"[\x21-\x7e]([\x20-\x7e]{0,62}[\x21-\x7e])?")


# ----------------------------------------------------------------------------- labels
def _label(text: str, path: str, line: int) -> str:
    word = text.strip()
    if not word:
        raise LabelFileError(path, "empty label", line=line)
    if "," in word or not _LABEL.fullmatch(word):
        raise LabelFileError(
            path, f"label {word[:40]!r} is not 1-64 printable characters without commas",
            line=line)
    return "attack" if word == "1" else word


def parse_labels(text: str, path: str = "labels") -> list[str]:
    """Labels of frames 1..N (index 0 is frame 1) from a label file's text (pure).

    Raises:
        LabelFileError: malformed line, bad or duplicate frame number, gap, empty file.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not lines:
        raise LabelFileError(path, "no labels (the file is empty)")
    header = [cell.strip().lower() for cell in lines[0].split(",")]
    if "frame" in header or "label" in header:
        return _parse_csv(lines, header, path)
    if len(lines) > MAX_FRAMES:
        raise LabelFileError(path, f"more than {MAX_FRAMES} labels")
    return [_label(line, path, number) for number, line in enumerate(lines, 1)]


def _parse_csv(lines: list[str], header: list[str], path: str) -> list[str]:
    if header.count("frame") != 1 or header.count("label") != 1:
        raise LabelFileError(path, "a CSV label file needs exactly one 'frame' and one "
                             f"'label' column; the header has {lines[0][:200]!r}", line=1)
    fi, li = header.index("frame"), header.index("label")
    by_frame: dict[int, str] = {}
    for number, line in enumerate(lines[1:], 2):
        cells = line.split(",")
        if len(cells) != len(header):
            raise LabelFileError(path, f"{len(cells)} cells, the header has {len(header)}",
                                 line=number)
        raw = cells[fi].strip()
        if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
            raise LabelFileError(path, f"frame {raw[:40]!r} is not a positive integer",
                                 line=number)
        frame = int(raw)
        if not 1 <= frame <= MAX_FRAMES:
            raise LabelFileError(path, f"frame {frame} is outside 1..{MAX_FRAMES} "
                                 "(frames are numbered from 1, as Wireshark does)", line=number)
        if frame in by_frame:
            raise LabelFileError(path, f"frame {frame} is labelled twice", line=number)
        by_frame[frame] = _label(cells[li], path, number)
    if not by_frame:
        raise LabelFileError(path, "no labels after the header")
    last = max(by_frame)
    if len(by_frame) != last:
        missing = next(f for f in range(1, last + 1) if f not in by_frame)
        raise LabelFileError(path, f"frame {missing} has no label ({last - len(by_frame)} of "
                             f"frames 1..{last} are missing); every frame needs one")
    return [by_frame[f] for f in range(1, last + 1)]


def read_labels(path: Path) -> list[str]:
    """Read and parse a label file (see the module doc).

    Raises:
        LabelFileError: unreadable, too large, not UTF-8, or malformed.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_LABEL_FILE_BYTES:
            raise LabelFileError(path, f"{size} bytes; a label file is at most "
                                 f"{MAX_LABEL_FILE_BYTES}")
        raw = path.read_bytes()
    except OSError as error:
        raise LabelFileError(path, f"cannot read: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise LabelFileError(path, f"not UTF-8 text (byte {error.start})", line=line) from None
    return parse_labels(text, str(path))


def is_benign(label: str) -> bool:
    return label.lower() in BENIGN_LABELS


# ----------------------------------------------------------------------------- scoring
@dataclass
class LabelledScores:
    """One score row per frame (or window): ``ids`` (frame numbers or window numbers,
    1-based), ``scores`` (NaN for a skipped frame), ``labels``, ``skipped`` reasons
    (empty string when scored), ``spans`` (sensor windows: first and last data row)."""

    unit: str
    ids: np.ndarray
    scores: np.ndarray
    labels: list[str]
    skipped: list[str]
    threshold: float
    target_fpr: float | None
    skip_counts: dict[str, int] = field(default_factory=dict)
    spans: list[tuple[int, int]] | None = None
    #: The model's own alarm per row when its rule is not ``score > threshold`` (fusion,
    #: k-of-n smoothing); False for a skipped frame.
    alarm: np.ndarray | None = None
    #: How the score column was made (printed and kept in eval.json).
    score_note: str = ""

    @property
    def alarms(self) -> np.ndarray:
        if self.alarm is not None:
            return np.asarray(self.alarm, dtype=bool)
        return np.asarray(np.nan_to_num(self.scores, nan=-np.inf) > self.threshold)

    def skipped_text(self) -> str:
        n = sum(self.skip_counts.values())
        parts = ", ".join(f"{v} {k}" for k, v in self.skip_counts.items())
        return f"{n} {self.unit} skipped" + (f": {parts}" if parts else "")


def _target_fpr(detector: Any) -> float | None:
    cal = getattr(detector, "calibration", None)
    if cal is not None:
        return float(cal.target_fpr)
    target = getattr(detector, "target_fpr", None)
    return None if target is None else float(target)


def score_capture_by_frame(model: Any, capture: Path, labels: list[str],
                           label_path: str = "labels") -> LabelledScores:
    """Score every IP frame of ``capture`` with ``model`` (a pipeline Model with packet
    features, continuing from its trained state) and align ``labels`` by frame number.

    Raises:
        PcapError: the capture is unreadable (nothing is scored then).
        LabelFileError: the labels do not cover exactly the capture's frames.
    """
    from tinyward.detect.pcap import ReadStats, read_packets
    from tinyward.detect.pipeline import PacketFeatures

    features = model.features
    if not isinstance(features, PacketFeatures):
        raise LabelFileError(label_path, "a capture needs a packet model; this one is for sensors")
    stats = ReadStats(frame_numbers=[], skipped_frames=[])
    packets = read_packets(capture, strip_tcp_options=features.strip_tcp_options, stats=stats)
    if len(labels) != stats.frames:
        raise LabelFileError(label_path, f"labels {len(labels)} frames, but {capture} has "
                             f"{stats.frames} frames; label every frame (numbered from 1)")
    scores = np.full(stats.frames, np.nan)
    fusion = getattr(model, "fusion", None)
    alarm = None if fusion is None else np.zeros(stats.frames, dtype=bool)
    threshold = float(model.detector.threshold if fusion is None else fusion.threshold)
    if packets:
        X = features.extractor.continue_with(packets)[1]
        numbers = np.asarray(stats.frame_numbers, dtype=np.int64)
        if fusion is None:
            scores[numbers - 1] = model.detector.score(X)
        else:  # the deployed rule: novel OR score > its class's threshold
            scores[numbers - 1] = fusion.score(X, packets)
            alarm[numbers - 1] = fusion.alarms(X, packets)  # type: ignore[index]
    skipped = [""] * stats.frames
    for number, reason in stats.skipped_frames or []:
        skipped[number - 1] = reason
    counts = {"non-IP": stats.non_ip, "malformed IP": stats.malformed_ip,
              "truncated IP": stats.truncated_ip}
    note = ("" if fusion is None else f"fused score of {fusion.name} (z, +1e6 when novel; "
            "alarm = novel OR score > its class's threshold)")
    return LabelledScores("frames", np.arange(1, stats.frames + 1), scores, labels, skipped,
                          threshold, _target_fpr(model.detector), counts, alarm=alarm,
                          score_note=note)


def score_csv_by_window(model: Any, csv_path: Path, label_column: str = "anomaly"
                        ) -> LabelledScores:
    """Score a sensor CSV with a sensor model; one row per window, labelled by its rows.

    Raises:
        CsvError: unreadable CSV or missing label column.
        LabelFileError: a packet model.
    """
    from tinyward.detect.errors import CsvError
    from tinyward.detect.pipeline import SensorFeatures
    from tinyward.detect.sensorfeatures import read_sensor_csv

    features = model.features
    if not isinstance(features, SensorFeatures):
        raise LabelFileError(csv_path, "a CSV needs a sensor model; this one is for packets")
    sensor = copy.deepcopy(features.extractor)
    sensor.reset_stream()  # a CSV is its own recording, as `detect score` scores it
    table = read_sensor_csv(csv_path, sensor.channels, delimiter=features.delimiter,
                            label_column=label_column)
    if table.labels is None:
        raise CsvError(csv_path, f"no label column {label_column!r}", line=1,
                       column=label_column)
    X = sensor.transform(table.values)
    scores = np.asarray(model.detector.score(X), float) if len(X) else np.zeros(0)
    threshold = float(model.detector.threshold)
    alarm, note = None, ""
    smoother = features.smoother
    if smoother is not None and len(scores):
        scores, smoothed_alarms = smoother.apply(scores, threshold)
        if smoother.kind == "ewma":
            threshold = threshold if smoother.threshold is None else float(smoother.threshold)
            note = f"EWMA-smoothed score (weight {smoother.weight:g})"
        else:
            alarm = np.asarray(smoothed_alarms, dtype=bool)
            note = f"alarm when {smoother.k} of the last {smoother.n} windows are above"
    window = sensor.config.window
    labels, spans = [], []
    for end in sensor.last_window_ends:
        begin = max(0, int(end) - window)
        rows = table.labels[begin:int(end)]
        labels.append("attack" if len(rows) and float(np.mean(rows != 0)) >= 0.5 else "0")
        spans.append((begin + 1, int(end)))
    return LabelledScores("windows", np.arange(1, len(scores) + 1), np.asarray(scores, float),
                          labels, [""] * len(scores), threshold,
                          _target_fpr(model.detector), {}, spans, alarm=alarm, score_note=note)


# ----------------------------------------------------------------------------- metrics
def evaluate_labelled(result: LabelledScores) -> dict[str, Any]:
    """Metrics of one labelled scoring (see the module doc), JSON-ready."""
    scored = ~np.isnan(result.scores)
    benign_mask = np.array([is_benign(label) for label in result.labels], dtype=bool)
    benign = result.scores[scored & benign_mask]
    attacks: dict[str, np.ndarray] = {}
    attack_total: dict[str, int] = {}
    for name in sorted({lab for lab in result.labels if not is_benign(lab)}):
        mask = np.array([lab == name for lab in result.labels], dtype=bool)
        attacks[name] = result.scores[scored & mask]
        attack_total[name] = int(mask.sum())
    out = summarise(benign, attacks, threshold=result.threshold)
    out["unit"] = result.unit
    out["n"] = len(result.scores)
    out["scored"] = int(scored.sum())
    out["skipped"] = dict(result.skip_counts)
    out["skipped_text"] = result.skipped_text()
    out["benign_skipped"] = int((~scored & benign_mask).sum())
    for name, total in attack_total.items():
        # a skipped attack frame is not detected: say how many there were
        out["per_attack"][name]["labelled"] = total
        out["per_attack"][name]["skipped"] = total - len(attacks[name])
    # At the model's own alarm rule (which need not be `score > threshold`): per label,
    # and precision / recall / F1 over every row (a skipped attack frame is a miss).
    alarms = result.alarms & scored
    for name in attacks:
        mask = np.array([lab == name for lab in result.labels], dtype=bool)
        if mask[scored].any():
            out["per_attack"][name]["detected_at_threshold"] = float(alarms[scored & mask].mean())
    attack_mask = ~benign_mask
    if (scored & attack_mask).any():
        out["overall"]["detected_at_threshold"] = float(alarms[scored & attack_mask].mean())
    tp = int((alarms & attack_mask).sum())
    fp = int((alarms & benign_mask).sum())
    fn = int((~alarms & attack_mask).sum())
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = (2 * tp / (2 * tp + fp + fn)) if tp else (0.0 if fp + fn else math.nan)
    out["at_threshold"] = {"tp": tp, "fp": fp, "fn": fn, "precision": precision,
                           "recall": recall, "f1": f1}
    out["threshold"] = result.threshold
    out["target_fpr"] = result.target_fpr
    out["score_note"] = result.score_note
    benign_alarms = alarms[scored & benign_mask].astype(np.float64)
    if len(benign) and result.target_fpr is not None:
        out["realised"] = realised_fpr(benign_alarms, 0.5, result.target_fpr).to_json()
        out["realised"]["threshold"] = result.threshold
    elif len(benign):
        n_alarms = int(benign_alarms.sum())
        out["realised"] = {"alarms": n_alarms, "n": len(benign),
                           "rate": n_alarms / len(benign), "requested": None}
    return out


def write_rows_csv(result: LabelledScores, path: Path) -> None:
    """One line per frame (``frame,label,score,alarm,skipped``) or per window
    (``window,first_row,last_row,label,score,alarm``); a skipped frame has no score."""
    lines = []
    alarms = result.alarms
    if result.spans is None:
        lines.append("frame,label,score,alarm,skipped")
        for i, s, lab, why, hit in zip(result.ids, result.scores, result.labels, result.skipped,
                                       alarms, strict=True):
            if math.isnan(s):
                lines.append(f"{i},{lab},,,{why}")
            else:
                lines.append(f"{i},{lab},{s:.9g},{int(hit)},")
    else:
        lines.append("window,first_row,last_row,label,score,alarm")
        for i, (a, b), s, lab, hit in zip(result.ids, result.spans, result.scores,
                                          result.labels, alarms, strict=True):
            lines.append(f"{i},{a},{b},{lab},{s:.9g},{int(hit)}")
    Path(path).write_text("\n".join(lines) + "\n")
