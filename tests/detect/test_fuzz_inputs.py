"""Hypothesis on the other files tinyward.detect reads from outside: sensor CSVs and the
saved feature state next to a model. Only the documented error types may escape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyward.detect.errors import CsvError, DetectMisuse
from tinyward.detect.netfeatures import NetFeatureExtractor, extractor_from_doc, extractor_to_doc
from tinyward.detect.pcap import Packet
from tinyward.detect.sensorfeatures import (
    SKAB_CHANNELS,
    SensorFeatureExtractor,
    read_sensor_csv,
    sensor_extractor_from_doc,
    sensor_extractor_to_doc,
)

HEADER = "datetime;" + ";".join(SKAB_CHANNELS)
CELL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet="0123456789.-eE+naif ;\"'\n\r\t,", max_size=8),
)


@settings(
    derandomize=True,  # a fixed seed: the same examples every run
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rows=st.lists(st.lists(CELL, min_size=0, max_size=11), max_size=6),
    header=st.sampled_from([HEADER, HEADER[:40], "", "a;b"]),
    raw=st.binary(max_size=40),
)
def test_fuzz_csv_only_raises_csv_error(
    tmp_path: Path, rows: list[list[str]], header: str, raw: bytes
) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(("\n".join([header, *(";".join(r) for r in rows)]) + "\n").encode() + raw)
    try:
        table = read_sensor_csv(path)
    except CsvError as error:
        assert str(path) in str(error) and "line" in str(error)
        return
    assert np.isfinite(table.values).all() and table.values.shape[1] == 8


def _mutate(value: object, data: st.DataObject, depth: int = 0) -> object:
    if isinstance(value, dict) and value and depth < 4 and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(value)))
        if data.draw(st.integers(0, 5)) == 0:
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: _mutate(value[key], data, depth + 1)}
    if isinstance(value, list) and value and depth < 4 and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(value) - 1))
        return [*value[:i], _mutate(value[i], data, depth + 1), *value[i + 1:]]
    return data.draw(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**40), 2**40),
            st.floats(),
            st.text(max_size=4),
            st.lists(st.integers(-3, 3), max_size=3),
            st.just({}),
        )
    )


@pytest.fixture(scope="module")
def net_doc() -> dict:
    extractor = NetFeatureExtractor()
    for i in range(50):
        extractor.update(
            Packet(
                i * 0.1,
                4,
                bytes([10, 0, 0, i % 5]),
                b"\x0a\x00\x00\x01",
                6,
                1000 + i % 3,
                1883,
                60,
                20,
                20,
                16,
                20,
            )
        )
    return json.loads(json.dumps(extractor_to_doc(extractor)))


@settings(
    derandomize=True,  # a fixed seed: the same examples every run
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzz_net_state_only_raises_detect_misuse(net_doc: dict, data: st.DataObject) -> None:
    doc = _mutate(net_doc, data)
    try:
        extractor = extractor_from_doc(doc)  # type: ignore[arg-type]
    except DetectMisuse:
        return
    vector = extractor.update(
        Packet(1e3, 4, b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", 17, 1, 2, 100, 20, 8, 0, 72)
    )
    assert len(vector) == 24


@pytest.fixture(scope="module")
def sensor_doc() -> dict:
    rng = np.random.default_rng(0)
    extractor = SensorFeatureExtractor(SKAB_CHANNELS)
    extractor.fit(rng.normal(size=(200, 8)).cumsum(axis=0))
    return json.loads(json.dumps(sensor_extractor_to_doc(extractor)))


@settings(
    derandomize=True,  # a fixed seed: the same examples every run
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzz_sensor_state_only_raises_detect_misuse(sensor_doc: dict, data: st.DataObject) -> None:
    doc = _mutate(sensor_doc, data)
    try:
        extractor = sensor_extractor_from_doc(doc)  # type: ignore[arg-type]
    except DetectMisuse:
        return
    with np.errstate(all="raise"):
        rows = extractor.transform(np.ones((40, len(extractor.channels))))
    assert rows.shape[1] == extractor.n_features and np.isfinite(rows).all()
