"""load_detector treats a model file as hostile: every bad file is a ModelFileError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyward.detect.errors import DetectError, ModelFileError
from tinyward.detect.models import KINDS, load_detector, make_detector

from ._synthetic import make_data

BENIGN, TEST, _ = make_data(n_benign=1500)


def _saved(kind: str, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    detector = make_detector(kind)
    detector.fit(BENIGN)
    path = tmp_path / f"{kind}.json"
    detector.save(path)
    return path, json.loads(path.read_text())


_GOOD: dict[str, bytes] = {}


def _good_bytes(kind: str, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if kind not in _GOOD:
        path, _ = _saved(kind, tmp_path_factory.mktemp(kind))
        _GOOD[kind] = path.read_bytes()
    return _GOOD[kind]


def _write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(document))
    return path


def _refused(path: Path, match: str) -> None:
    with pytest.raises(ModelFileError, match=match) as info:
        load_detector(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, DetectError)


def test_missing_file(tmp_path: Path) -> None:
    _refused(tmp_path / "nope.json", "cannot read")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.json").write_bytes(b"")
    _refused(tmp_path / "e.json", "empty")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_truncated_file_at_every_tenth(kind: str, tmp_path: Path,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    good = _good_bytes(kind, tmp_path_factory)
    for cut in range(1, 10):
        path = tmp_path / f"cut{cut}.json"
        path.write_bytes(good[: len(good) * cut // 10])
        _refused(path, "truncated|not valid JSON")


def test_binary_garbage(tmp_path: Path) -> None:
    (tmp_path / "g.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    _refused(tmp_path / "g.json", "not UTF-8")


def test_wrong_format_tag(tmp_path: Path) -> None:
    _refused(_write(tmp_path, {"format": "keras", "version": 1, "kind": "autoencoder"}),
             "not a tinyward model")


def test_top_level_list(tmp_path: Path) -> None:
    _refused(_write(tmp_path, [1, 2, 3]), "not a JSON object")


def test_future_version(tmp_path: Path) -> None:
    _, doc = _saved("mahalanobis", tmp_path)
    doc["version"] = 2
    _refused(_write(tmp_path, doc), "version 2 is not supported")


def test_unknown_kind(tmp_path: Path) -> None:
    _, doc = _saved("mahalanobis", tmp_path)
    doc["kind"] = "kitnet"
    _refused(_write(tmp_path, doc), "unknown detector kind 'kitnet'")


def test_wrong_shape_of_weights(tmp_path: Path) -> None:
    _, doc = _saved("autoencoder", tmp_path)
    doc["W2"] = doc["W2"][:-1]
    _refused(_write(tmp_path, doc), "'W2': has shape")


def test_ragged_weights(tmp_path: Path) -> None:
    _, doc = _saved("autoencoder", tmp_path)
    doc["W1"][1] = doc["W1"][1][:-1]
    _refused(_write(tmp_path, doc), "'W1'")


def test_int8_weight_out_of_range(tmp_path: Path) -> None:
    _, doc = _saved("autoencoder-int8", tmp_path)
    doc["int8"]["W1"][0][0] = 200
    _refused(_write(tmp_path, doc), r"'int8.W1': holds a value outside \[-127, 127\]")


def test_int8_shift_out_of_range(tmp_path: Path) -> None:
    _, doc = _saved("mahalanobis-int8", tmp_path)
    doc["int8"]["s"][0] = 40
    _refused(_write(tmp_path, doc), "'int8.s'")


def test_int8_weight_not_integer(tmp_path: Path) -> None:
    _, doc = _saved("mahalanobis-int8", tmp_path)
    doc["int8"]["U"][3] = 1.5
    _refused(_write(tmp_path, doc), "'int8.U': holds values that are not integers")


def test_int8_threshold_not_integer(tmp_path: Path) -> None:
    _, doc = _saved("autoencoder-int8", tmp_path)
    doc["threshold"] = 12.5
    _refused(_write(tmp_path, doc), "'threshold'")


def test_input_multiplier_not_float32(tmp_path: Path) -> None:
    _, doc = _saved("autoencoder-int8", tmp_path)
    doc["int8"]["input"]["mult"][0] = 0.1  # not exactly representable in float32
    _refused(_write(tmp_path, doc), "not an exact float32")


def test_nan_refused(tmp_path: Path) -> None:
    path, _ = _saved("mahalanobis", tmp_path)
    path.write_text(path.read_text().replace('"threshold": ', '"threshold": NaN, "x": ', 1))
    _refused(path, "NaN")


def test_non_positive_scale(tmp_path: Path) -> None:
    _, doc = _saved("mahalanobis", tmp_path)
    doc["standardizer"]["scale"][2] = 0.0
    _refused(_write(tmp_path, doc), "'standardizer.scale': holds a value that is not positive")


def test_lower_triangular_factor(tmp_path: Path) -> None:
    _, doc = _saved("mahalanobis", tmp_path)
    doc["U"][3][0] = 1.0
    _refused(_write(tmp_path, doc), "not upper triangular")


def test_bool_is_not_a_number(tmp_path: Path) -> None:
    _, doc = _saved("mahalanobis", tmp_path)
    doc["mu"][0] = True
    _refused(_write(tmp_path, doc), "'mu'")


def test_deep_nesting(tmp_path: Path) -> None:
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    _refused(tmp_path / "deep.json", "nested too deeply|not a JSON object")


def test_oversized_file(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with path.open("wb") as handle:
        handle.truncate(5 * 1024 * 1024)
    _refused(path, "at most")


def test_good_file_still_loads(tmp_path: Path) -> None:
    path, _ = _saved("mahalanobis-int8", tmp_path)
    assert np.all(np.isfinite(load_detector(path).score(TEST[:10])))


def _mutate(value: Any, data: st.DataObject, depth: int = 0) -> Any:
    """Replace one randomly chosen leaf or subtree of a JSON document."""
    if isinstance(value, dict) and value and depth < 4:
        key = data.draw(st.sampled_from(sorted(value)))
        return {**value, key: _mutate(value[key], data, depth + 1)}
    if isinstance(value, list) and value and depth < 4 and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(value) - 1))
        return [*value[:i], _mutate(value[i], data, depth + 1), *value[i + 1:]]
    return data.draw(st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
        st.text(max_size=5), st.lists(st.integers(-200, 200), max_size=4), st.just({}),
    ))


@pytest.mark.slow
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), kind=st.sampled_from(sorted(KINDS)))
def test_fuzz_mutated_documents_only_raise_model_file_error(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, kind: str
) -> None:
    document = json.loads(_good_bytes(kind, tmp_path_factory))
    mutated = _mutate(document, data)
    path = tmp_path_factory.mktemp("fuzz") / "m.json"
    path.write_text(json.dumps(mutated))
    try:
        detector = load_detector(path)
    except ModelFileError:
        return
    # A mutation that still loads must give a usable detector, not a crash later.
    assert detector.score(TEST[:5]).shape == (5,)


@settings(max_examples=150, deadline=None)
@given(blob=st.binary(max_size=300))
def test_fuzz_random_bytes_only_raise_model_file_error(blob: bytes) -> None:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.json"
        path.write_bytes(blob)
        with pytest.raises(ModelFileError):
            load_detector(path)


def test_absurd_weight_is_refused(tmp_path: Path) -> None:
    _, doc = _saved("autoencoder", tmp_path)
    doc["W2"][0][0] = 1e154  # finite, but its square overflows
    _refused(_write(tmp_path, doc), r"'W2': holds a value beyond \+-1e\+06")


def test_huge_integer_threshold_is_refused(tmp_path: Path) -> None:
    path, _ = _saved("mahalanobis", tmp_path)
    text = path.read_text()
    start = text.index('"threshold": ') + len('"threshold": ')
    end = text.index(",", start)
    path.write_text(text[:start] + "1" + "0" * 400 + text[end:])
    _refused(path, "'threshold': is not finite")


def test_huge_features_saturate_without_warnings(tmp_path: Path) -> None:
    path, _ = _saved("autoencoder-int8", tmp_path)
    detector = load_detector(path)
    X = TEST[:3].copy()
    X[0, 0], X[1, 1], X[2, 2] = 1e300, -1e300, 1e39
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = detector.score(X)
        float_scores = detector.float_model.score(X)  # type: ignore[attr-defined]
    assert np.all(scores > detector.threshold)
    assert np.all(np.isfinite(float_scores))
