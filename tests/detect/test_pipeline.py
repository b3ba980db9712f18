"""tinyward.detect.pipeline: one model file (detector and feature state), and the model
files of before, whose feature state sits next to them in MODEL.features.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinyward.detect import pipeline
from tinyward.detect._modelfile import LIMITS
from tinyward.detect.errors import DetectError, DetectMisuse, ModelFileError


@pytest.fixture(scope="module")
def sensor_model(skab: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pipeline") / "pump.json"
    model = pipeline.train([skab / "anomaly-free/anomaly-free.csv"], packets=False,
                           kind="mahalanobis")
    pipeline.save_model(model, path)
    return path


def _as_legacy(model: Path, tmp_path: Path) -> Path:
    """The same model written the old way: detector file plus MODEL.features.json."""
    document = json.loads(model.read_text())
    features = document.pop("features")
    legacy = tmp_path / "old.json"
    legacy.write_text(json.dumps(document))
    pipeline.legacy_features_path(legacy).write_text(json.dumps(features))
    return legacy


def test_saved_model_scores_like_the_trained_one(sensor_model: Path, skab: Path) -> None:
    loaded = pipeline.load_model(sensor_model)
    first = pipeline.score_file(loaded, skab / "valve1/1.csv")
    again = pipeline.score_file(loaded, skab / "valve1/1.csv")
    # Scoring continues from the trained state and leaves the model unchanged.
    assert first.unit == "windows" and len(first.scores) > 10
    np.testing.assert_array_equal(first.scores, again.scores)
    assert first.problem is None


def test_old_model_with_a_features_file_still_loads(sensor_model: Path, skab: Path,
                                                    tmp_path: Path) -> None:
    legacy = _as_legacy(sensor_model, tmp_path)
    new = pipeline.score_file(pipeline.load_model(sensor_model), skab / "valve1/1.csv")
    old = pipeline.score_file(pipeline.load_model(legacy), skab / "valve1/1.csv")
    np.testing.assert_array_equal(new.scores, old.scores)


def test_oversized_features_file_is_refused_before_it_is_read(sensor_model: Path,
                                                             tmp_path: Path) -> None:
    legacy = _as_legacy(sensor_model, tmp_path)
    sidecar = pipeline.legacy_features_path(legacy)
    with sidecar.open("r+b") as handle:  # sparse: no memory or disk is spent
        handle.truncate(LIMITS.max_file_bytes + 1)
    with pytest.raises(DetectError, match="a feature state is at most"):
        pipeline.load_model(legacy)


def test_model_without_any_feature_state_says_what_to_do(sensor_model: Path,
                                                         tmp_path: Path) -> None:
    legacy = _as_legacy(sensor_model, tmp_path)
    pipeline.legacy_features_path(legacy).unlink()
    with pytest.raises(DetectError, match=r"holds no feature state.*detect train"):
        pipeline.load_model(legacy)


@pytest.mark.parametrize("bad", [
    "not a state",
    {"type": "sensors", "state": {"channels": "x"}},
    {"type": "cameras", "state": {}},
    {"type": "packets", "strip_tcp_options": "yes", "state": {}},
])
def test_bad_feature_section_is_refused_naming_the_file(sensor_model: Path, tmp_path: Path,
                                                        bad: object) -> None:
    document = json.loads(sensor_model.read_text())
    document["features"] = bad
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ModelFileError, match=r"bad\.json: 'features': not a tinyward feature"):
        pipeline.load_model(path)


def test_only_int8_detectors_export_to_c(sensor_model: Path, tmp_path: Path) -> None:
    with pytest.raises(DetectMisuse, match="only int8 detectors export"):
        pipeline.export_detector_c(pipeline.load_model(sensor_model).detector, tmp_path)
    with pytest.raises(DetectMisuse, match="only packet features export"):
        pipeline.export_features_c(pipeline.load_model(sensor_model), tmp_path)


def test_a_model_too_large_to_load_is_never_written(tmp_path: Path) -> None:
    from tinyward.detect._modelfile import write_model

    target = tmp_path / "big.json"
    with pytest.raises(DetectMisuse, match="a model file is at most"):
        write_model(target, "mahalanobis", {"w": [0.123456789] * (LIMITS.max_file_bytes // 10)})
    assert not target.exists()
