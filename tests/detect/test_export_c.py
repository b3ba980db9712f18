"""The C99 export: compiles strictly, and matches the Python integer reference bit for bit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs
from tinyward.detect._c_harness import SELFTEST_EXPECTED, build_host_harness
from tinyward.detect.errors import DetectMisuse
from tinyward.detect.export_c import export_c, render
from tinyward.detect.models import make_detector

from ._synthetic import make_data

pytestmark = needs(shutil.which("gcc") is not None, "needs gcc")

BENIGN, TEST, ATTACK = make_data()
N_VECTORS = 6000


def _vectors(detector, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """>= 5000 int8 vectors: real quantised features plus uniform and extreme ones."""
    rng = np.random.default_rng(seed)
    d = TEST.shape[1]
    real = np.r_[TEST, ATTACK]
    scaled = real[rng.integers(0, len(real), 1000)] * rng.uniform(0.5, 2.0, (1000, 1))
    floats = np.r_[real, scaled].astype(np.float32)
    uniform = rng.integers(-128, 128, size=(N_VECTORS - 3000 - 4, d), dtype=np.int8)
    extremes = np.array([[-128] * d, [127] * d, [0] * d, [-127, 127] * (d // 2)], dtype=np.int8)
    quantised = np.r_[detector.quantize_features(floats.astype(np.float64)), uniform, extremes]
    return floats, quantised.astype(np.int8)


@pytest.fixture(scope="module", params=["autoencoder-int8", "mahalanobis-int8"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    detector = make_detector(request.param)
    detector.fit(BENIGN, target_fpr=0.01, seed=0)
    out = tmp_path_factory.mktemp(request.param)
    files = export_c(detector, out, prefix="tw_model")
    exe = build_host_harness(files.source, files.prefix, out / "build")
    return detector, files, exe


def test_c_scores_equal_python_reference_bit_for_bit(built) -> None:
    detector, _, exe = built
    _, Xq = _vectors(detector)
    assert len(Xq) >= 5000
    done = subprocess.run([str(exe), "score"], input=Xq.tobytes(), capture_output=True, check=False,
                          timeout=60)
    assert done.returncode == 0, "harness failed or is_anomaly disagreed with score"
    c_scores = np.frombuffer(done.stdout, dtype=np.int32)
    py_scores = detector.score_q(Xq)
    assert len(c_scores) == len(Xq)
    mismatches = np.flatnonzero(c_scores != py_scores)
    assert mismatches.size == 0, f"first mismatch at vector {mismatches[:1]}"
    print(f"\n{detector.name}: {len(Xq)} vectors bit-exact, "
          f"{int(np.sum(c_scores > detector.threshold_int()))} above threshold")


def test_c_quantisation_equals_python_bit_for_bit(built) -> None:
    detector, _, exe = built
    floats, _ = _vectors(detector)
    done = subprocess.run(
        [str(exe), "quantize"], input=floats.tobytes(), capture_output=True, check=False, timeout=60
    )
    assert done.returncode == 0
    c_q = np.frombuffer(done.stdout, dtype=np.int8).reshape(floats.shape)
    assert np.array_equal(c_q, detector.quantize_features(floats.astype(np.float64)))


def test_export_is_one_header_and_one_source_without_heap_or_float_on_int8_path(built) -> None:
    _, files, _ = built
    header = files.header.read_text()
    source = files.source.read_text()
    assert sorted(p.name for p in files.header.parent.iterdir() if p.is_file()) == [
        "tw_model.c", "tw_model.h"]
    assert "#ifndef TW_MODEL_H" in header and 'extern "C"' in header
    for word in ("malloc", "calloc", "free(", "double"):
        assert word not in source
    score_fn = source[source.index("tw_model_status tw_model_score("):]
    assert "float" not in score_fn
    # Every table is static const, and every public function carries the prefix.
    for line in source.splitlines():
        if line.startswith("static") and "[" in line and "=" in line:
            assert line.startswith("static const"), line
    assert "Usage:" in header


def test_status_table_matches_enum(built) -> None:
    _, files, _ = built
    header = files.header.read_text()
    source = files.source.read_text()
    enum_names = [line.split("=")[0].strip() for line in header.splitlines()
                  if line.strip().startswith("TW_MODEL_") and "=" in line and "/*" in line]
    table = source[source.index("tw_model_status_strings[] = {"):].split("};")[0]
    assert len(enum_names) == table.count('"') // 2


def test_float_detector_is_refused_for_export(tmp_path: Path) -> None:
    detector = make_detector("autoencoder")
    detector.fit(BENIGN[:1000])
    with pytest.raises(DetectMisuse, match="int8"):
        export_c(detector, tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["", "9abc", "Tw", "a__b", "a-b", "x" * 40, "tw_"])
def test_bad_prefix_is_refused(prefix: str) -> None:
    detector = make_detector("mahalanobis-int8")
    detector.fit(BENIGN[:1000])
    with pytest.raises(DetectMisuse, match="prefix"):
        render(detector, prefix)


def test_bad_arguments_return_status_codes_not_crashes(built) -> None:
    _, _, exe = built
    done = subprocess.run([str(exe), "selftest"], capture_output=True, text=True, timeout=30,
                          check=True)
    assert done.stdout.splitlines() == SELFTEST_EXPECTED


def test_no_undefined_behaviour_under_sanitizers(built, tmp_path: Path) -> None:
    """Signed overflow, bad shifts, out-of-bounds reads: UBSan and ASan abort on any."""
    detector, files, _ = built
    exe = build_host_harness(files.source, files.prefix, tmp_path, extra_flags=(
        "-fsanitize=undefined,address", "-fno-sanitize-recover=all", "-g"))
    _, Xq = _vectors(detector, seed=99)
    done = subprocess.run([str(exe), "score"], input=Xq.tobytes(), capture_output=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert np.array_equal(np.frombuffer(done.stdout, dtype=np.int32), detector.score_q(Xq))
    selftest = subprocess.run([str(exe), "selftest"], capture_output=True, text=True,
                              timeout=30, check=False)
    assert selftest.returncode == 0, selftest.stderr[-2000:]


@pytest.mark.parametrize("name", ["x */ int evil; /*", "a\nb", "", "q" * 61, 'say "hi"'])
def test_feature_names_cannot_inject_c(name: str) -> None:
    detector = make_detector("mahalanobis-int8")
    detector.fit(BENIGN[:1000])
    names = [f"f{i}" for i in range(BENIGN.shape[1] - 1)] + [name]
    with pytest.raises(DetectMisuse, match="feature names"):
        render(detector, "tw", names)


def test_header_states_the_target_false_positive_rate(built) -> None:
    _, files, _ = built
    assert "for a false-positive rate of 1%" in files.header.read_text()
