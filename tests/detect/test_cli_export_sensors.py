"""`tinyward detect export-features` on a sensor model: the header, its state bytes, and a
clear refusal of a model the C export does not implement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from tinyward.cli.main import cli
from tinyward.detect import pipeline
from tinyward.detect.models import make_detector
from tinyward.detect.sensorfeatures import SensorFeatureConfig, SensorFeatureExtractor
from tinyward.detect.sensorfeatures_c import state_bytes


def _model(tmp_path: Path, config: SensorFeatureConfig) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(800)[:, None]
    values = np.sin(t / np.array([40.0, 55.0, 70.0])) + 0.05 * rng.normal(size=(800, 3))
    extractor = SensorFeatureExtractor(["flow", "temp", "pressure"], config)
    X = extractor.fit(values)
    detector = make_detector("mahalanobis-int8")
    detector.fit(X)
    path = tmp_path / "m.json"
    pipeline.save_model(pipeline.Model(detector, pipeline.SensorFeatures(extractor)), path)
    return path


def test_export_features_writes_the_sensor_header(tmp_path: Path) -> None:
    model = _model(tmp_path, SensorFeatureConfig(history=200))
    result = CliRunner().invoke(cli, ["detect", "export-features", str(model), "--out",
                                      str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    header = (tmp_path / "c" / "tw_sf.h").read_text()
    assert '"pressure"' in header and '"zspike_hold"' in header
    size = state_bytes(3, 30, 200, v2=True)  # resolution floors, families: the v2 state
    assert size == 8 * 3 * (200 + 30 + 37) + 56
    assert f"state: {size} B = 8 x channels x (history + window + " in result.output
    assert f"36 channels: {state_bytes(36, 30, 200, v2=True)} B" in result.output


def test_export_features_refuses_an_unbounded_history(tmp_path: Path) -> None:
    model = _model(tmp_path, SensorFeatureConfig(history=0))
    result = CliRunner().invoke(cli, ["detect", "export-features", str(model), "--out",
                                      str(tmp_path / "c"), "--prefix", "pump"])
    assert result.exit_code != 0
    assert "error:" in result.output and "history=0" in result.output
    assert not (tmp_path / "c" / "pump.h").exists()
