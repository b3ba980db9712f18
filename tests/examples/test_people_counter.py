"""People counter: contract, held-out accuracy, simulator truth, CSV and serial sources."""

from __future__ import annotations

import itertools
import os
import pathlib

import numpy as np
import pytest

from tests.examples.conftest import check_result, entry, load, manifest

simulate = load("people_counter", "simulate")
sensor_log = load("people_counter", "sensor_log")
evaluate = load("people_counter", "evaluate")
app_module = load("people_counter", "people_counter_app")

#: Stated accuracy on held-out traffic (seeds 9000-9002, 60 episodes each; the shipped
#: model gets 0.856 there, 0.884 on evaluate.py's 20 streams). The floor leaves room for a
#: retrained model; the zone-sequence rule must also be beaten on the same streams.
MIN_EPISODE_ACCURACY = 0.80
HELD_OUT = (9000, 9001, 9002)


def test_results_obey_contract() -> None:
    m = manifest("people_counter")
    fields = m["output"]["fields"]
    shape = tuple(m["input"]["frame_shape"])
    stream = simulate.simulate(7, 20)
    app = entry("people_counter")
    results = []
    for frame in sensor_log.frames_of(stream.readings, shape[0]):
        assert frame.shape == shape and frame.dtype == np.int16
        result = app.process(frame)
        if result is not None:
            check_result(result, fields)
            results.append(result["count"])
    assert results[0] == 0 and len(results) > 5
    assert all(a != b for a, b in itertools.pairwise(results))  # only changes are reported


def test_held_out_accuracy_beats_stated_floor_and_rule() -> None:
    model = evaluate.evaluate(lambda: entry("people_counter"), seeds=HELD_OUT)
    rule = evaluate.evaluate(evaluate.RuleCounter, seeds=HELD_OUT)
    assert model.episodes == 3 * evaluate.EPISODES
    assert model.accuracy >= MIN_EPISODE_ACCURACY
    assert model.accuracy > rule.accuracy


def test_simulator_is_reproducible_and_truth_consistent() -> None:
    a, b = simulate.simulate(11, 30), simulate.simulate(11, 30)
    np.testing.assert_array_equal(a.readings, b.readings)
    assert not np.array_equal(a.readings, simulate.simulate(12, 30).readings)
    assert a.inside.min() >= 0
    assert int(a.inside[-1]) == sum(e.net for e in a.episodes)
    assert {e.kind for e in simulate.simulate(5, 40).episodes} <= {k for k, _ in simulate.KINDS}
    only = simulate.simulate(3, 10, kinds=("turn_back",))
    assert {e.kind for e in only.episodes} == {"turn_back"} and int(only.inside[-1]) == 0
    with pytest.raises(ValueError, match="unknown"):
        simulate.simulate(1, 5, kinds=("teleport",))


def test_invalid_readings_do_not_count_anyone() -> None:
    app = entry("people_counter")
    floor = np.full((20, 2), 2200, np.int16)
    outputs = [app.process(floor)] + [app.process(np.zeros((20, 2), np.int16)) for _ in range(30)]
    assert outputs[0] == {"count": 0} and all(o is None for o in outputs[1:])


def test_process_refuses_wrong_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        entry("people_counter").process(np.zeros((20, 3), np.int16))


def test_csv_round_trip(tmp_path: pathlib.Path) -> None:
    stream = simulate.simulate(3, 5)
    path = tmp_path / "log.csv"
    simulate.write_csv(stream, path)
    np.testing.assert_array_equal(sensor_log.read_csv(path), stream.readings)
    frames = list(sensor_log.csv_frames(path))
    assert len(frames) == len(stream.readings) // 20


def test_csv_missing_column(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("t_ms,zone_out_mm\n0,2200\n")
    missing = r"log\.csv:1: missing column\(s\) zone_in_mm"
    with pytest.raises(sensor_log.SensorLogError, match=missing):
        sensor_log.read_csv(path)


def test_csv_non_numeric_and_out_of_range(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("t_ms,zone_out_mm,zone_in_mm\n0,2200,2210\n50,22x0,2210\n")
    with pytest.raises(sensor_log.SensorLogError, match=r"log\.csv:3: zone_out_mm is '22x0'"):
        sensor_log.read_csv(path)
    path.write_text("zone_out_mm,zone_in_mm\n2200,-5\n")
    with pytest.raises(sensor_log.SensorLogError, match=r"log\.csv:2: zone_in_mm is -5, outside"):
        sensor_log.read_csv(path)
    path.write_text("zone_out_mm,zone_in_mm\n2200\n")
    with pytest.raises(sensor_log.SensorLogError, match=r"log\.csv:2: 1 cells"):
        sensor_log.read_csv(path)
    path.write_text("")
    with pytest.raises(sensor_log.SensorLogError, match="empty"):
        sensor_log.read_csv(path)


def test_csv_empty_cell_is_an_invalid_reading(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("zone_out_mm,zone_in_mm\n2200,\n2200.0,2190\n")
    np.testing.assert_array_equal(sensor_log.read_csv(path), [[2200, 0], [2200, 2190]])


def test_serial_source_reads_a_tty() -> None:
    """A pseudo-terminal stands in for the USB serial port: the same termios path."""
    stream = simulate.simulate(4, 3)
    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        lines = b"garbage-partial-line\n" + b"".join(
            b"%d,%d\n" % tuple(r) for r in stream.readings[:45]
        )
        os.write(master, lines)
        frames = list(sensor_log.serial_frames(name, max_frames=2, timeout_s=2))
        np.testing.assert_array_equal(np.concatenate(frames), stream.readings[:40])
        os.write(master, b"x\n2200,oops\n")
        with pytest.raises(sensor_log.SensorLogError, match=r":2: zone_in_mm is 'oops'"):
            list(sensor_log.serial_frames(name, max_frames=1, timeout_s=2))
        with pytest.raises(sensor_log.SensorLogError, match=r"no reading for 0\.2 s"):
            list(sensor_log.serial_frames(name, max_frames=1, timeout_s=0.2))
    finally:
        os.close(master)
        os.close(slave)


def test_counting_from_a_csv_log_prints_each_change(tmp_path: pathlib.Path, capsys) -> None:
    stream = simulate.simulate(5, 8)
    path = tmp_path / "log.csv"
    simulate.write_csv(stream, path)
    sensor_log.main(["--csv", str(path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["t=", "1", "s", "count=0"]
    assert len(lines) > 3 and all("count=" in line for line in lines)
