"""Fuzz the two CSV readers and the serial line parser: refuse with their own error, or parse."""

from __future__ import annotations

import pathlib
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.examples.conftest import load

skab = load("pump_monitor", "skab")
sensor_log = load("people_counter", "sensor_log")

CELLS = st.one_of(
    st.integers(-10, 9000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(alphabet="0123456789.,;-+eE x\t\"", max_size=8),
    st.just(""),
)


def _write(text: str) -> pathlib.Path:
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False, encoding="utf-8") as handle:
        handle.write(text)
    return pathlib.Path(handle.name)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(CELLS, min_size=0, max_size=4), max_size=6), st.booleans())
def test_sensor_log_csv(rows: list[list[str]], good_header: bool) -> None:
    header = "t_ms,zone_out_mm,zone_in_mm" if good_header else "zone_out_mm,t"
    path = _write(header + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    try:
        readings = sensor_log.read_csv(path)
    except sensor_log.SensorLogError as error:
        assert str(path) in str(error)
    else:
        assert readings.dtype == np.int16 and readings.shape[1] == 2
        assert readings.min(initial=0) >= 0 and readings.max(initial=0) <= sensor_log.MAX_MM
    finally:
        path.unlink()


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=80))
def test_serial_line(line: bytes) -> None:
    try:
        out, inside = sensor_log.parse_line(line, "tty:1")
    except sensor_log.SensorLogError as error:
        assert str(error).startswith("tty:1: ")
    else:
        assert 0 <= out <= sensor_log.MAX_MM and 0 <= inside <= sensor_log.MAX_MM


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(CELLS, min_size=0, max_size=12), max_size=5), st.booleans())
def test_skab_csv(rows: list[list[str]], full_header: bool) -> None:
    columns = ["datetime", *skab.SENSOR_COLUMNS, "anomaly", "changepoint"]
    if not full_header:
        columns.remove("Pressure")
    path = _write(";".join(columns) + "\n" + "\n".join(";".join(r) for r in rows) + "\n")
    try:
        run = skab.read_run(path)
    except skab.SkabFormatError as error:
        assert str(path) in str(error)
    else:
        assert run.values.shape[1] == 8 and np.all(np.isfinite(run.values))
    finally:
        path.unlink()
