"""Bit-exactness beyond trained models: random int8 models with extreme parameters.

Trained models only visit a small part of the parameter space; these use the edges the
integer path allows (weights +-127, biases +-2^24, multipliers up to 2^31 - 1, shifts 0
and 30, LUT entries +-127) so every branch of the requantisation and clamps is compared
between C and Python.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs
from tinyward.detect._c_harness import build_host_harness
from tinyward.detect._int8_models import Int8AutoencoderDetector, Int8MahalanobisDetector
from tinyward.detect.export_c import export_c
from tinyward.detect.int8 import BIAS_LIMIT, InputQuantizer, QAutoencoder, QMahalanobis

pytestmark = needs(shutil.which("gcc") is not None, "needs gcc")


def _edgy_ints(
    rng: np.random.Generator, size: int | tuple[int, ...], low: int, high: int
) -> np.ndarray:
    values = rng.integers(low, high + 1, size=size, dtype=np.int64)
    mask = rng.random(size) < 0.2
    return np.where(mask, rng.choice([low, high], size=size), values)


def _inq(rng: np.random.Generator, d: int) -> InputQuantizer:
    return InputQuantizer(offset=rng.normal(size=d).astype(np.float32),
                          mult=rng.uniform(1, 50, size=d).astype(np.float32))


def _random_autoencoder(seed: int) -> Int8AutoencoderDetector:
    rng = np.random.default_rng(seed)
    d, h = int(rng.integers(1, 40)), int(rng.integers(1, 12))
    q = QAutoencoder(
        inq=_inq(rng, d),
        W1=_edgy_ints(rng, (h, d), -127, 127), b1=_edgy_ints(rng, h, -BIAS_LIMIT, BIAS_LIMIT),
        m1=_edgy_ints(rng, h, 0, 2**31 - 1), s1=_edgy_ints(rng, h, 0, 30),
        W2=_edgy_ints(rng, (d, h), -127, 127), b2=_edgy_ints(rng, d, -BIAS_LIMIT, BIAS_LIMIT),
        m2=_edgy_ints(rng, d, 0, 2**31 - 1), s2=_edgy_ints(rng, d, 0, 30),
        lut=_edgy_ints(rng, 256, -127, 127),
    )
    detector = Int8AutoencoderDetector()
    detector.quantized = q
    detector.threshold = float(rng.integers(0, 2**31 - 1))
    return detector


def _random_mahalanobis(seed: int) -> Int8MahalanobisDetector:
    rng = np.random.default_rng(seed)
    d = int(rng.integers(1, 40))
    q = QMahalanobis(
        inq=_inq(rng, d), U=_edgy_ints(rng, d * (d + 1) // 2, -127, 127),
        b=_edgy_ints(rng, d, -BIAS_LIMIT, BIAS_LIMIT), m=_edgy_ints(rng, d, 0, 2**31 - 1),
        s=_edgy_ints(rng, d, 0, 30),
    )
    detector = Int8MahalanobisDetector()
    detector.quantized = q
    detector.threshold = float(rng.integers(0, 2**31 - 1))
    return detector


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("make", [_random_autoencoder, _random_mahalanobis])
def test_random_extreme_models_are_bit_exact(make, seed: int, tmp_path: Path) -> None:
    detector = make(seed)
    files = export_c(detector, tmp_path, prefix="tw_rand")
    exe = build_host_harness(files.source, files.prefix, tmp_path / "build")
    d = detector.quantized.n_features
    rng = np.random.default_rng(1000 + seed)
    Xq = rng.integers(-128, 128, size=(2000, d), dtype=np.int8)
    Xq[:20] = rng.choice(np.array([-128, -127, 127], dtype=np.int8), size=(20, d))
    done = subprocess.run([str(exe), "score"], input=Xq.tobytes(), capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 0
    assert np.array_equal(np.frombuffer(done.stdout, dtype=np.int32), detector.score_q(Xq))
    floats = (rng.normal(size=(500, d)) * 10).astype(np.float32)
    done = subprocess.run([str(exe), "quantize"], input=floats.tobytes(), capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 0
    assert np.array_equal(np.frombuffer(done.stdout, dtype=np.int8).reshape(floats.shape),
                          detector.quantize_features(floats.astype(np.float64)))
