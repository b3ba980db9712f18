"""`tinyward detect train/score/eval` and `tinyward bench detect --help` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinyward.cli.main import cli


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_train_and_score_a_capture(mqtt: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.json"
    code, out = _run(
        "detect",
        "train",
        str(mqtt / "benign/benign-train.pcap"),
        "--strip-tcp-options",
        "--kind",
        "mahalanobis-int8",
        "--out",
        str(model),
    )
    assert code == 0, out
    assert "fitted on 6375 benign vectors of 24 features" in out
    # One file: the detector and the feature state, no MODEL.features.json beside it.
    state = json.loads(model.read_text())["features"]
    assert state["type"] == "packets" and state["strip_tcp_options"] is True
    assert not model.with_name("m.json.features.json").exists()
    scores = tmp_path / "s.csv"
    code, out = _run(
        "detect",
        "score",
        str(model),
        str(mqtt / "malformed/malformed-test.pcap"),
        "--out",
        str(scores),
    )
    assert code == 0, out
    lines = scores.read_text().splitlines()
    assert lines[0] == "index,score,alarm" and len(lines) == 1 + 3166
    alarms = sum(int(line.rsplit(",", 1)[1]) for line in lines[1:])
    assert alarms > 0.9 * 3166  # malformed MQTT, options removed, is mostly flagged
    code, out = _run("detect", "export", str(model), "--out", str(tmp_path / "c"))
    assert code == 0, out
    header = (tmp_path / "c" / "tinyward_detector.h").read_text()
    assert "pair_w_fast" in header and "feature 0" not in header  # the model's own names
    code, out = _run("detect", "export-features", str(model), "--out", str(tmp_path / "c"))
    assert code == 0 and "TCP options removed" in out, out
    assert (tmp_path / "c" / "tw_nf.c").exists()
    assert "29192 B of state (double) or 16648 B (float build)" in out


def test_train_and_score_sensors(skab: Path, tmp_path: Path) -> None:
    model = tmp_path / "s.json"
    code, out = _run(
        "detect",
        "train",
        "--sensors",
        str(skab / "anomaly-free/anomaly-free.csv"),
        "--kind",
        "autoencoder",
        "--out",
        str(model),
    )
    assert code == 0, out
    code, out = _run("detect", "score", str(model), str(skab / "valve1/1.csv"))
    assert code == 0 and "windows" in out, out


def test_bad_inputs_give_a_message_and_non_zero_exit(tmp_path: Path, skab: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"\x00" * 64)
    code, out = _run("detect", "train", str(junk), "--out", str(tmp_path / "m.json"))
    assert code == 2 and "junk.pcap: not a pcap or pcapng file" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("a;b\n1;2\n")
    code, out = _run("detect", "train", "--sensors", str(bad), "--channels", "a,Current",
                     "--out", str(tmp_path / "m.json"))
    assert code == 2 and "bad.csv: line 1" in out and "missing column" in out
    model = tmp_path / "m2.json"
    assert (
        _run(
            "detect",
            "train",
            "--sensors",
            str(skab / "anomaly-free/anomaly-free.csv"),
            "--out",
            str(model),
        )[0]
        == 0
    )
    document = json.loads(model.read_text())
    document["features"]["state"] = "not a state"
    model.write_text(json.dumps(document))
    code, out = _run("detect", "score", str(model), str(skab / "valve1/1.csv"))
    assert code != 0 and "'features': not a tinyward feature state" in out


@pytest.mark.slow
def test_eval_on_sensors_writes_json_and_png(skab: Path, tmp_path: Path) -> None:
    code, out = _run(
        "detect", "eval", "--sensors", str(skab), "--kind", "mahalanobis", "--out", str(tmp_path)
    )
    assert code == 0, out
    assert "INJECTED" in out and "TPR@0.1%" in out
    report = json.loads((tmp_path / "eval.json").read_text())
    result = report["sensors/mahalanobis"]
    assert "INJECTED" in result["note"] and set(result["per_attack"]) >= {"freeze", "replay"}
    assert (tmp_path / "roc-sensors.png").stat().st_size > 1000
    # each detector also OR-ed with the per-channel lagz alarm, on the same windows
    fused = report["sensors/mahalanobis+lagz"]
    assert "mahalanobis+lagz" in out and fused["benign_n"] == result["benign_n"]
    assert {k: v["n"] for k, v in fused["per_attack"].items()} == {
        k: v["n"] for k, v in result["per_attack"].items()}


def test_help_texts() -> None:
    for args in (("detect", "--help"), ("detect", "eval", "--help"), ("bench", "detect", "--help")):
        code, out = _run(*args)
        assert code == 0 and "Usage" in out


def test_score_keeps_what_was_read_before_a_truncation(mqtt: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.json"
    assert (
        _run("detect", "train", str(mqtt / "benign/benign-train.pcap"), "--out", str(model))[0] == 0
    )
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((mqtt / "malformed/malformed-test.pcap").read_bytes()[:150_001])
    scores = tmp_path / "s.csv"
    code, out = _run("detect", "score", str(model), str(cut), "--out", str(scores))
    assert code == 2 and "cut.pcap: file truncated" in out and "(read so far)" in out
    kept = len(scores.read_text().splitlines()) - 1
    assert kept > 1000 and f"packet #{kept}" in out


def test_train_with_novelty_and_classes_scores_and_exports_them(
    mqtt: Path, tmp_path: Path
) -> None:
    model = tmp_path / "n.json"
    code, out = _run("detect", "train", str(mqtt / "benign/benign-train.pcap"),
                     "--strip-tcp-options", "--novelty", "service", "--per-class",
                     "--out", str(model))
    assert code == 0 and "novelty set (service): 1 tuple, 24 B" in out, out  # broker:1883
    saved = json.loads(model.read_text())["fusion"]
    assert saved["per_class"] is True and len(saved["novelty"]["hashes"]) == 1
    # MQTTset's MalariaDoS capture reaches its broker at another address: every packet
    # is a never-seen service (a capture artefact, not evidence: see docs/detect.md)
    code, out = _run("detect", "score", str(model), str(mqtt / "malariados/malariados-test.pcap"))
    assert code == 0 and "933 novel, 933 alarms" in out, out
    code, out = _run("detect", "export-features", str(model), "--out", str(tmp_path / "c"))
    assert code == 0 and (tmp_path / "c" / "tw_nf_nov.c").exists(), out
    # a model file whose fusion section is doctored is refused with the key named
    doc = json.loads(model.read_text())
    doc["fusion"]["scale"]["threshold"] = [1.0]
    model.write_text(json.dumps(doc))
    code, out = _run("detect", "score", str(model), str(mqtt / "malariados/malariados-test.pcap"))
    assert code != 0 and "'fusion'" in out, out


def test_bench_cells_mark_a_rate_the_calibration_cannot_support() -> None:
    """issue 13: a threshold whose calibration warned (too few scores for the rate) is
    marked "!" in the bench table, next to "*" for outside 2x; a supported one is not."""
    from tinyward.cli.detect import _own_cells

    def entry(rate: float, warned: bool) -> dict:
        return {"calibration": {"warnings": ["0.1 % FPR needs at least 10000"] if warned
                                else []},
                "realised": {"rate": rate, "low": rate / 2, "high": rate * 2,
                             "within_2x": 0.0005 <= rate <= 0.002 or 0.005 <= rate <= 0.02},
                "tpr": {"overall": 0.9}}

    cells = _own_cells({"thresholds": {"0.001": entry(0.0001, True),
                                       "0.01": entry(0.01, False)}})
    assert cells[0].startswith("0.01%*!") and cells[2].startswith("1.00% [")
