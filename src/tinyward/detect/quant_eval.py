"""What int8 quantisation costs: ROC AUC of each float model next to its int8 twin.

Also a deliberately simple SKAB feature set (each row's 8 sensor values and their
first differences, 16 features) so the models can be measured without the full
feature pipeline. Training uses SKAB's anomaly-free run only; the runs with valve
faults are the test data (rows labelled ``anomaly`` = 1 are positives).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from tinyward.detect._int8_models import Int8AutoencoderDetector, Int8MahalanobisDetector
from tinyward.detect.errors import CsvError

SKAB_CHANNELS = (
    "Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
    "Thermocouple", "Voltage", "Volume Flow RateRMS",
)


def skab_simple_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(features (n-1, 16), anomaly labels (n-1,)) from one SKAB CSV.

    Raises:
        CsvError: a missing column or a non-numeric cell (names file, line and column).
    """
    rows: list[list[float]] = []
    labels: list[float] = []
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=";")
        header = next(reader, None)
        if header is None:
            raise CsvError(path, "file is empty", line=1)
        missing = [c for c in SKAB_CHANNELS if c not in header]
        if missing:
            raise CsvError(path, f"missing column(s) {missing}", line=1, partial=rows)
        index = [header.index(c) for c in SKAB_CHANNELS]
        label_at = header.index("anomaly") if "anomaly" in header else None
        for line, record in enumerate(reader, start=2):
            try:
                rows.append([float(record[i]) for i in index])
                labels.append(float(record[label_at]) if label_at is not None else 0.0)
            except (ValueError, IndexError):
                raise CsvError(
                    path, "missing or non-numeric cell", line=line, partial=rows
                ) from None
    values = np.asarray(rows)
    if len(values) < 2:
        raise CsvError(path, "fewer than two rows", line=len(rows) + 1, partial=rows)
    features = np.hstack([values[1:], np.diff(values, axis=0)])
    return features, np.asarray(labels[1:])


def skab_runs(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, features, labels) of every SKAB run with a fault (valve1, valve2, other).

    Raises:
        CsvError: a bad CSV (names file, line and column).
    """
    runs = []
    for folder in ("valve1", "valve2", "other"):
        for path in sorted((root / folder).glob("*.csv"), key=lambda p: int(p.stem)):
            X, y = skab_simple_features(path)
            runs.append((f"{folder}/{path.name}", X, y))
    return runs


@dataclass(frozen=True)
class QuantRow:
    model: str
    auc_float: float
    auc_int8: float
    tpr_float: float  # at the detector's own threshold
    tpr_int8: float
    fpr_float: float
    fpr_int8: float
    model_bytes_int8: int
    ops: int


def compare_float_int8(
    X_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, *,
    target_fpr: float = 0.001, seed: int = 0,
) -> list[QuantRow]:
    """Fit each int8 detector (its float twin is fitted on the same split) and compare."""
    result = []
    for detector in (Int8AutoencoderDetector(), Int8MahalanobisDetector()):
        detector.fit(X_train, target_fpr=target_fpr, seed=seed)
        f = detector.float_model
        s_float, s_int = f.score(X_test), detector.score(X_test)
        pos, neg = y_test == 1, y_test == 0
        result.append(QuantRow(
            model=f.name,
            auc_float=float(roc_auc_score(y_test, s_float)),
            auc_int8=float(roc_auc_score(y_test, s_int)),
            tpr_float=float(np.mean(s_float[pos] > f.threshold)),
            tpr_int8=float(np.mean(s_int[pos] > detector.threshold)),
            fpr_float=float(np.mean(s_float[neg] > f.threshold)),
            fpr_int8=float(np.mean(s_int[neg] > detector.threshold)),
            model_bytes_int8=detector.model_bytes(),
            ops=detector.ops_per_inference(),
        ))
    return result


def skab_compare(root: Path, train_rows: int = 400, seed: int = 0) -> dict[str, dict[str, float]]:
    """SKAB's outlier protocol: per run, fit on the first ``train_rows`` rows, score the
    rest; return each model's ROC AUC averaged over runs, float and int8.

    Runs whose test part holds only one class are skipped (AUC undefined).
    Raises CsvError for a bad CSV.
    """
    sums: dict[str, dict[str, float]] = {}
    for _, X, y in skab_runs(root):
        X_test, y_test = X[train_rows:], y[train_rows:]
        if len(set(y_test.tolist())) < 2:
            continue
        for row in compare_float_int8(X[:train_rows], X_test, y_test, target_fpr=0.01, seed=seed):
            entry = sums.setdefault(row.model, {"auc_float": 0.0, "auc_int8": 0.0, "runs": 0.0})
            entry["auc_float"] += row.auc_float
            entry["auc_int8"] += row.auc_int8
            entry["runs"] += 1
    return {model: {"auc_float": e["auc_float"] / e["runs"], "auc_int8": e["auc_int8"] / e["runs"],
                    "runs": e["runs"]} for model, e in sums.items()}
