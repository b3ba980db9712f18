"""`detect eval --model` judges the alarm rule the device runs, as `detect score` does.

Before (issue 13 audit), labelled eval scored the *base* detector against its global
threshold and carried the training file's stream state into a sensor CSV: a model with a
novelty set, per-class thresholds or smoothing was judged by another rule than the one
`detect score` and the C export apply. These tests compare eval's per-row alarms with
`pipeline.score_file` on the same input, and check the precision/recall/F1 it reports.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.detect.test_labelled_eval import _SIZES, _benign, _tcp_frame, _write
from tinyward.cli.main import cli
from tinyward.detect import pipeline
from tinyward.detect.labelled import evaluate_labelled, score_capture_by_frame


def _rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def novelty_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    tmp = tmp_path_factory.mktemp("novel")
    train = _write(tmp / "train.pcap", [_benign(i) for i in range(3000)], 1000.0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # too few calibration vectors for 1 %: warned
        model = pipeline.train([train], kind="mahalanobis", target_fpr=0.01, novelty="pair",
                               per_class=True)
    pipeline.save_model(model, tmp / "m.json")
    frames, labels = [], []
    for i in range(900):
        if 100 <= i < 800 and i % 3 == 2:  # a 4th client: benign sizes and rate, new peer
            frames.append(_tcp_frame(77, 1, 40002, int(_SIZES[3000 + i])))
            labels.append("mimic")
        else:
            frames.append(_benign(3000 + i))
            labels.append("0")
    capture = _write(tmp / "eval.pcap", frames, 1000.0 + 0.05 * 3000 + 1, 2)
    return tmp / "m.json", capture, labels


def test_eval_of_a_novelty_model_alarms_as_detect_score_does(
        novelty_model: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    model_path, capture, labels = novelty_model
    label_file = tmp_path / "labels.txt"
    label_file.write_text("".join(f"{lab}\n" for lab in labels))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["detect", "eval", "--model", str(model_path), "--capture",
                                      str(capture), "--labels", str(label_file), "--out",
                                      str(out)])
    assert result.exit_code == 0, result.output
    plain = pipeline.score_file(pipeline.load_model(model_path), capture)
    rows = _rows(out / "frames.csv")
    assert [int(r[3]) for r in rows] == [int(a) for a in plain.alarms]
    # the mimic is caught by novelty (the base score alone misses it: next test)
    mimic = np.array([lab == "mimic" for lab in labels])
    assert plain.novel is not None and plain.novel[mimic].all()
    assert all(r[3] == "1" for r, m in zip(rows, mimic, strict=True) if m)
    report = json.loads((out / "eval.json").read_text())
    assert report["per_attack"]["mimic"]["detected_at_threshold"] == 1.0
    at = report["at_threshold"]
    assert at["tp"] == int(mimic.sum()) and at["fn"] == 0
    assert report["realised"]["alarms"] == at["fp"]
    assert "fused score of mahalanobis+novelty(pair)+classes" in result.output
    assert "F1" in result.output


def test_unsafe_base_score_would_miss_the_mimic(
        novelty_model: tuple[Path, Path, list[str]]) -> None:
    """The rule eval used before: the base detector's score over its global threshold."""
    model_path, capture, labels = novelty_model
    model = pipeline.load_model(model_path)
    model.fusion = None  # what eval looked at before
    summary = evaluate_labelled(score_capture_by_frame(model, capture, labels))
    assert summary["per_attack"]["mimic"]["detected_at_threshold"] < 0.05


@pytest.mark.parametrize("smooth", ["kofn:2/3", "ewma:0.3"])
def test_sensor_eval_uses_a_fresh_stream_and_the_smoothing_like_detect_score(
        skab: Path, tmp_path: Path, smooth: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = pipeline.train([skab / "anomaly-free" / "anomaly-free.csv"], kind="mahalanobis",
                               packets=False, target_fpr=0.01,
                               sensor=pipeline.SensorOptions(smooth=smooth))
    pipeline.save_model(model, tmp_path / "s.json")
    run = skab / "valve1" / "1.csv"
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["detect", "eval", "--model", str(tmp_path / "s.json"),
                                      "--csv", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    plain = pipeline.score_file(pipeline.load_model(tmp_path / "s.json"), run)
    rows = _rows(out / "windows.csv")
    assert np.allclose([float(r[4]) for r in rows], plain.scores, rtol=1e-7)
    assert [int(r[5]) for r in rows] == [int(a) for a in plain.alarms]
    report = json.loads((out / "eval.json").read_text())
    at = report["at_threshold"]
    truth = np.array([r[3] != "0" for r in rows])
    alarm = np.array([r[5] == "1" for r in rows])
    assert at["tp"] == int((truth & alarm).sum()) and at["fp"] == int((~truth & alarm).sum())
    assert at["f1"] == pytest.approx(2 * at["tp"] / (2 * at["tp"] + at["fp"] + at["fn"]))
    assert report["realised"]["alarms"] == at["fp"]


def test_train_and_eval_say_when_novelty_alone_exceeds_the_budget(tmp_path: Path) -> None:
    """issue 13, one FPR budget: a training capture in which a new host appears every 20
    frames (5 % of the later stretch is novel) cannot give a fused alarm at 1 %:
    `detect train` warns, the model file records it, and `detect eval` repeats it."""
    frames = [_tcp_frame(100 + i // 20, 1, 40100, int(_SIZES[i])) if i % 20 == 19
              else _benign(i) for i in range(3000)]
    train = _write(tmp_path / "train.pcap", frames, 1000.0, 1)
    model = tmp_path / "m.json"
    runner = CliRunner()
    result = runner.invoke(cli, ["detect", "train", str(train), "--novelty", "pair",
                                 "--per-class", "--target-fpr", "0.01", "--out", str(model)])
    assert result.exit_code == 0, result.output
    assert "warning: novelty alone alarms on 5" in result.output
    saved = json.loads(model.read_text())["fusion"]["calibration"]
    assert saved["novelty_rate"] == pytest.approx(0.05, abs=0.01) and saved["warnings"]
    capture = _write(tmp_path / "eval.pcap", [_benign(3000 + i) for i in range(300)],
                     1000.0 + 0.05 * 3000 + 1, 2)
    labels = tmp_path / "labels.txt"
    labels.write_text("0\n" * 300)
    result = runner.invoke(cli, ["detect", "eval", "--model", str(model), "--capture",
                                 str(capture), "--labels", str(labels), "--out",
                                 str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "warning (recorded when the model was trained): novelty alone alarms" in result.output
