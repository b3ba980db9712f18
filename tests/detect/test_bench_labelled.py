"""`tinyward bench detect --train --capture --labels`: every detector next to KitNET,
HalfSpaceTrees and IsolationForest on any capture with per-frame labels (issue 13's check
on data the project has never seen needs it: the MQTTset bench reads only MQTTset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.detect.test_labelled_eval import model_and_capture  # noqa: F401  (fixture)
from tinyward.cli.main import cli


def test_bench_on_a_labelled_capture_compares_every_detector(
        model_and_capture: tuple[Path, Path, list[str]], tmp_path: Path) -> None:  # noqa: F811
    model_path, capture, labels = model_and_capture
    label_file = tmp_path / "labels.txt"
    label_file.write_text("".join(f"{lab}\n" for lab in labels))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, [
        "bench", "detect", "--quick", "--train", str(model_path.parent / "train.pcap"),
        "--capture", str(capture), "--labels", str(label_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "60 frames, 57 scored; skipped: 2 non-IP, 0 malformed IP, 1 truncated IP" in \
        result.output
    report = json.loads(out.read_text())
    view = "tcp-options-removed"
    for name in ("mahalanobis-int8", "autoencoder-int8", "kitnet (pysad)",
                 "river HalfSpaceTrees", "sklearn IsolationForest",
                 "mahalanobis-int8+novelty(pair)+classes"):
        row = report[f"{view}/{name}"]
        assert set(row["per_attack"]) == {"scan"}, name
        assert row["per_attack"]["scan"]["n"] == 10
        assert {"tpr_at_0.001", "tpr_at_0.01"} <= set(row["per_attack"]["scan"])
        assert row["benign_n"] == 47
        assert set(row["thresholds"]) == {"0.001", "0.01"}
        assert "realised" in row["thresholds"]["0.001"]
    assert "scan @1%" in result.output and "own 0.1%" in result.output


def test_bench_labelled_needs_all_three_and_whole_labels(
        model_and_capture: tuple[Path, Path, list[str]], tmp_path: Path) -> None:  # noqa: F811
    model_path, capture, labels = model_and_capture
    train = str(model_path.parent / "train.pcap")
    result = CliRunner().invoke(cli, ["bench", "detect", "--train", train, "--capture",
                                      str(capture)])
    assert result.exit_code == 2 and "all of --train, --capture and --labels" in result.output
    short = tmp_path / "short.txt"
    short.write_text("".join(f"{lab}\n" for lab in labels[:-1]))
    result = CliRunner().invoke(cli, ["bench", "detect", "--quick", "--train", train,
                                      "--capture", str(capture), "--labels", str(short),
                                      "--out", str(tmp_path / "b.json")])
    assert result.exit_code != 0
    assert "labels 59 frames, but" in result.output


pytestmark = pytest.mark.filterwarnings("ignore::Warning")
