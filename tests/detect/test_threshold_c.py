"""The on-device threshold update (DSPOT-style): Python reference and its C99 export.

The C build is compared with the Python reference bit for bit (alarm and threshold after
every score) on thousands of scores from a drifting, heavy-tailed stream.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs
from tinyward.detect._c_harness import HOST_CFLAGS
from tinyward.detect.errors import DetectMisuse
from tinyward.detect.threshold import Policy, calibrate
from tinyward.detect.threshold_c import export_threshold_c, state_bytes
from tinyward.detect.threshold_stream import StreamThreshold, from_calibration

HARNESS = r"""
#include <stdio.h>
#include "tw_thr.h"
int main(void)
{
    tw_thr_t s;
    double x;
    tw_thr_init(&s);
    while (fread(&x, sizeof x, 1, stdin) == 1) {
        unsigned char alarm = tw_thr_update(&s, x) ? 1 : 0;
        double z = tw_thr_threshold(&s);
        if (fwrite(&alarm, 1, 1, stdout) != 1 || fwrite(&z, sizeof z, 1, stdout) != 1) return 4;
    }
    return 0;
}
"""


def _calibrated(alpha: float, seed: int = 0) -> tuple[StreamThreshold, np.ndarray]:
    rng = np.random.default_rng(seed)
    calibration_scores = rng.gamma(2.0, 1.0, 10_000)  # 0.1 % needs 10,000
    cal = calibrate(calibration_scores, 0.001, policy=Policy(bootstrap=0))
    state = from_calibration(cal, calibration_scores, alpha=alpha)
    drift = np.linspace(0.0, 1.5, 8000)  # the benign level creeps up after deployment
    stream = rng.gamma(2.0, 1.0, 8000) + drift
    stream[::997] += 40.0  # a few attacks
    return state, stream


def _python_trace(state: StreamThreshold, stream: np.ndarray) -> tuple[list[int], list[float]]:
    alarms, thresholds = [], []
    for x in stream:
        alarms.append(int(state.update(float(x))))
        thresholds.append(state.threshold)
    return alarms, thresholds


@needs(shutil.which("gcc") is not None, "needs gcc to build the exported C")
@pytest.mark.parametrize("alpha", [0.0, 0.002])
def test_exported_threshold_update_is_bit_exact_with_python(alpha: float, tmp_path: Path) -> None:
    state, stream = _calibrated(alpha)
    files = export_threshold_c(StreamThreshold.from_json(state.to_json()), tmp_path, "tw_thr")
    (tmp_path / "main.c").write_text(HARNESS)
    binary = tmp_path / "thr"
    subprocess.run(["gcc", *HOST_CFLAGS, "-I", str(tmp_path), str(files.source),
                    str(tmp_path / "main.c"), "-lm", "-o", str(binary)], check=True, timeout=120)
    out = subprocess.run([str(binary)], input=stream.astype("<f8").tobytes(),
                         capture_output=True, check=True, timeout=60).stdout
    assert len(out) == 9 * len(stream)
    c_alarms = [out[9 * i] for i in range(len(stream))]
    c_thresholds = [struct.unpack_from("<d", out, 9 * i + 1)[0] for i in range(len(stream))]
    py_alarms, py_thresholds = _python_trace(state, stream)
    assert c_alarms == py_alarms
    assert c_thresholds == py_thresholds  # bit for bit, every step
    assert sum(py_alarms) >= 8
    assert len(set(py_thresholds)) > (100 if alpha else 0)  # with drift on, it adapted


def test_an_alarm_does_not_teach_the_threshold() -> None:
    state, _ = _calibrated(0.01)
    before = state.to_json()
    for _ in range(500):  # an attacker pushing scores up cannot raise the bar
        assert state.update(before["z"] + before["level"] + 100.0)
    assert state.to_json() == before


def test_drift_adaptation_keeps_the_rate_closer_than_a_fixed_threshold() -> None:
    rng = np.random.default_rng(4)
    calibration_scores = rng.gamma(2.0, 1.0, 6000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = calibrate(calibration_scores, 0.01, policy=Policy(bootstrap=0))
    later = rng.gamma(2.0, 1.0, 40_000) + 1.0  # the benign level rose by one unit
    fixed = float(np.mean(later > cal.threshold))
    adaptive = from_calibration(cal, calibration_scores, alpha=0.01)
    rate = float(np.mean([adaptive.update(float(x)) for x in later]))
    assert fixed > 2.5 * 0.01, fixed  # the fixed threshold breaks its promise
    assert 0.005 <= rate <= 0.02, rate


def test_state_is_bounded_and_round_trips() -> None:
    state, stream = _calibrated(0.002)
    for x in stream[:3000]:
        state.update(float(x))
    assert state_bytes(state) == 32
    assert StreamThreshold.from_json(state.to_json()) == state


@needs(shutil.which("gcc") is not None, "needs gcc to build the exported C")
def test_export_threshold_command_writes_compilable_c(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tinyward.cli.main import cli
    from tinyward.detect.models import load_detector, make_detector

    rng = np.random.default_rng(0)
    det = make_detector("mahalanobis-int8").fit(rng.normal(size=(12_000, 5)))
    det.save(tmp_path / "m.json")
    # a detector file alone has no feature state: wrap it as the pipeline would
    from tinyward.detect import pipeline
    from tinyward.detect.netfeatures import NetFeatureExtractor

    model = pipeline.Model(load_detector(tmp_path / "m.json"),
                           pipeline.PacketFeatures(NetFeatureExtractor()))
    pipeline.save_model(model, tmp_path / "model.json")
    result = CliRunner().invoke(cli, ["detect", "export-threshold", str(tmp_path / "model.json"),
                                      "--out", str(tmp_path / "c"), "--drift-alpha", "0.01"])
    assert result.exit_code == 0, result.output
    assert "32 B of state" in result.output
    subprocess.run(["gcc", *HOST_CFLAGS, "-c", str(tmp_path / "c" / "tw_threshold.c"), "-o",
                    str(tmp_path / "t.o")], check=True, timeout=120)
    header = (tmp_path / "c" / "tw_threshold.h").read_text()
    z = det.threshold - det.calibration.normal_level
    assert f"#define TW_THRESHOLD_Z {z.hex()}" in header


def test_prefix_follows_the_detector_export_rule(tmp_path: Path) -> None:
    # "_tw" gave the guard _TW_H, an identifier reserved to the C implementation.
    state = StreamThreshold(z=1.0, q=0.01, alpha=0.0, level=0.0)
    for bad in ("_tw", "tw__x", "tw_", "Tw", "tw-x"):
        with pytest.raises(DetectMisuse, match="prefix"):
            export_threshold_c(state, tmp_path, bad)
    assert not list(tmp_path.iterdir())
    assert export_threshold_c(state, tmp_path, "tw_thr").header.name == "tw_thr.h"
