"""The export builds for a Cortex-M4 (sizes printed) and runs on QEMU's mps2-an386."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs
from tinyward.detect.cortex_m import arm_sizes, arm_stack_usage, qemu_instructions
from tinyward.detect.export_c import export_c
from tinyward.detect.models import make_detector

from ._synthetic import make_data

BENIGN, TEST, ATTACK = make_data()
needs_arm = needs(shutil.which("arm-none-eabi-gcc") is not None,
                  "needs gcc-arm-none-eabi (scripts/install-system-deps.sh)")


@pytest.fixture(scope="module", params=["autoencoder-int8", "mahalanobis-int8"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    detector = make_detector(request.param)
    detector.fit(BENIGN, seed=0)
    out = tmp_path_factory.mktemp(request.param)
    return detector, export_c(detector, out, prefix="tw_model"), out


@needs_arm
def test_builds_for_cortex_m4_without_static_ram(exported) -> None:
    detector, files, out = exported
    soft = arm_sizes(files.source, out / "arm")
    int_only = arm_sizes(files.source, out / "arm", ("-DTW_MODEL_NO_FLOAT",))
    hard = arm_sizes(files.source, out / "arm", ("-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"))
    print(f"\n{detector.name} (d={TEST.shape[1]}): const tables {detector.model_bytes()} B; "
          f"arm-none-eabi-size text/data/bss: soft-float {soft.text}/{soft.data}/{soft.bss}, "
          f"int-only {int_only.text}/{int_only.data}/{int_only.bss}, "
          f"M4F hard-float {hard.text}/{hard.data}/{hard.bss}")
    assert soft.data == 0 and soft.bss == 0  # no static RAM at all
    assert int_only.text < soft.text  # the float helper really is optional
    assert int_only.text >= detector.model_bytes()  # the tables are in flash
    assert soft.flash <= 4096


@needs_arm
def test_stack_use_is_fixed_and_small(exported) -> None:
    detector, files, out = exported
    usage = arm_stack_usage(files.source, out / "stack")
    deepest = usage["tw_model_is_anomaly"] + usage["tw_model_score"]
    print(f"\n{detector.name}: stack bytes per function {usage}; deepest call {deepest}")
    assert deepest <= 256


@pytest.mark.slow
@needs_arm
@needs(shutil.which("qemu-system-arm") is not None, "needs qemu-system-arm")
def test_runs_on_qemu_cortex_m4_with_python_scores(exported) -> None:
    detector, files, out = exported
    rng = np.random.default_rng(7)
    rows = np.r_[TEST[rng.integers(0, len(TEST), 32)], ATTACK[rng.integers(0, len(ATTACK), 32)]]
    Xq = detector.quantize_features(rows)
    result = qemu_instructions(files.source, files.prefix, Xq, detector.score_q(Xq),
                               Path(out / "qemu"), runs=2)
    print(f"\n{detector.name}: {result.instructions_per_inference:.0f} Thumb-2 instructions per "
          f"inference on QEMU mps2-an386 (Cortex-M4), over {result.inferences} inferences; "
          f"firmware text/data/bss {result.firmware_sizes.text}/{result.firmware_sizes.data}/"
          f"{result.firmware_sizes.bss}")
    assert result.checksum_ok, "scores on the Cortex-M4 differ from the Python reference"
    assert 50 < result.instructions_per_inference < 20 * detector.ops_per_inference()
