"""Score the pump monitor on SKAB's outlier-detection protocol, next to the leaderboard.

The protocol (SKAB repository notebooks, as described in ``../shared/data/README.md``): for
each of the 34 labelled runs, the first 400 rows are training data and the rest test data;
the detector is fitted per run on its training rows; the predictions on all runs' test rows
are concatenated and scored as binary classification against ``anomaly``: F1, false-alarm
rate (FAR = FP / (FP + TN)) and missed-alarm rate (MAR = FN / (FN + TP)), in percent.

Here the "detector" is the application itself, built by its own ``factory`` from
``model.npz`` and fed one frame per second exactly as on the device: it calibrates on the
first 400 frames (reporting ``normal``) and detects afterwards. Its state at a row is the
last state it reported. Nothing is refitted or vectorised for the evaluation.

Run: ``python examples/pump_monitor/evaluate.py`` (about 3 s, with the scikit-learn re-run of the published recipe).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import pump_monitor_app
import skab

HERE = pathlib.Path(__file__).resolve().parent

#: Published outlier-detection leaderboard (SKAB README): F1, FAR %, MAR %.
LEADERBOARD = (
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T²+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T²", 0.66, 19.21, 42.6),
    ("Isolation Forest", 0.29, 2.56, 82.89),
)


@dataclass(frozen=True)
class Scores:
    """Binary-classification scores over the concatenated test rows."""

    f1: float
    far: float  # percent
    mar: float  # percent
    tp: int
    fp: int
    fn: int
    tn: int


def scores(pred: np.ndarray, truth: np.ndarray) -> Scores:
    """F1, FAR % and MAR % of boolean predictions against boolean labels."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    tp = int(np.sum(pred & truth))
    fp = int(np.sum(pred & ~truth))
    fn = int(np.sum(~pred & truth))
    tn = int(np.sum(~pred & ~truth))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    far = 100.0 * fp / (fp + tn) if fp + tn else 0.0
    mar = 100.0 * fn / (fn + tp) if fn + tp else 0.0
    return Scores(f1, far, mar, tp, fp, fn, tn)


def replay(run: skab.Run, model_path: pathlib.Path) -> np.ndarray:
    """Feed a run through a fresh app, frame by frame; its state (True = anomaly) per row."""
    app = pump_monitor_app.factory([model_path])
    state = "normal"
    states = np.zeros(len(run.values), dtype=bool)
    for i, frame in enumerate(skab.frames(run)):
        result = app.process(frame)
        if result is not None:
            state = result["state"]
        states[i] = state == "anomaly"
    return states


def evaluate(
    model_path: pathlib.Path = HERE / "model.npz", data_dir: pathlib.Path | None = None
) -> tuple[Scores, dict[str, Scores]]:
    """Run the protocol; overall scores and scores per run folder (valve1, valve2, other).

    Raises:
        FileNotFoundError: the SKAB data or the model is missing.
        skab.SkabFormatError: a run is malformed.
    """
    preds, truths = [], []
    by_folder: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for run in skab.labelled_runs(data_dir):
        assert run.anomaly is not None  # labelled_runs requires labels
        pred = replay(run, model_path)[skab.TRAIN_ROWS :]
        truth = run.anomaly[skab.TRAIN_ROWS :].astype(bool)
        preds.append(pred)
        truths.append(truth)
        folder = by_folder.setdefault(run.path.parent.name, ([], []))
        folder[0].append(pred)
        folder[1].append(truth)
    overall = scores(np.concatenate(preds), np.concatenate(truths))
    parts = {k: scores(np.concatenate(p), np.concatenate(t)) for k, (p, t) in by_folder.items()}
    return overall, parts


def reference_scores(data_dir: pathlib.Path | None = None) -> Scores:
    """The published T²+Q recipe re-run with scikit-learn on the same rows (reference.py)."""
    import reference  # evaluation only: scikit-learn and scipy

    preds, truths = [], []
    for run in skab.labelled_runs(data_dir):
        assert run.anomaly is not None
        values = run.values.astype(np.float32).astype(np.float64)  # what the device sees
        preds.append(reference.predict(values, skab.TRAIN_ROWS)[skab.TRAIN_ROWS :])
        truths.append(run.anomaly[skab.TRAIN_ROWS :].astype(bool))
    return scores(np.concatenate(preds), np.concatenate(truths))


def table(overall: Scores, parts: dict[str, Scores], rerun: Scores | None = None) -> str:
    """The result beside the published leaderboard, as fixed-width text."""
    lines = [f"{'detector':<38} {'F1':>5} {'FAR %':>7} {'MAR %':>7}"]
    mine = "pump_monitor (this app, in numpy)"
    lines.append(f"{mine:<38} {overall.f1:5.2f} {overall.far:7.2f} {overall.mar:7.2f}")
    if rerun is not None:
        name = "T²+Q recipe re-run here (sklearn)"
        lines.append(f"{name:<38} {rerun.f1:5.2f} {rerun.far:7.2f} {rerun.mar:7.2f}")
    for name, f1, far, mar in LEADERBOARD:
        lines.append(f"{name + ' (published)':<38} {f1:5.2f} {far:7.2f} {mar:7.2f}")
    lines.append("")
    lines.append("pump_monitor per folder:")
    for name, s in parts.items():
        lines.append(f"  {name:<36} {s.f1:5.2f} {s.far:7.2f} {s.mar:7.2f}")
    lines.append(
        f"test rows: {overall.tp + overall.fp + overall.fn + overall.tn} "
        f"(TP {overall.tp}, FP {overall.fp}, FN {overall.fn}, TN {overall.tn})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=pathlib.Path, default=HERE / "model.npz")
    parser.add_argument("--data", type=pathlib.Path, default=None, help="SKAB folder")
    args = parser.parse_args(argv)
    overall, parts = evaluate(args.model, args.data)
    print(table(overall, parts, reference_scores(args.data)))


if __name__ == "__main__":
    main()
