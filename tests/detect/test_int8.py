"""The integer primitives and what quantisation costs in detection quality."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import needs_shared
from tinyward.detect.errors import DetectMisuse
from tinyward.detect.int8 import quantize_multiplier, requantize, tanh_lut
from tinyward.detect.quant_eval import compare_float_int8, skab_compare

from ._synthetic import make_data

SKAB = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "skab"


@given(real=st.floats(min_value=1e-9, max_value=0.4999))
def test_multiplier_represents_factor_closely(real: float) -> None:
    m, t = quantize_multiplier(real)
    assert 0 <= m < 2**31 and 0 <= t <= 30
    assert abs(m / 2 ** (32 + t) - real) <= real * 2**-29


def test_multiplier_of_half_or_more_is_refused() -> None:
    with pytest.raises(DetectMisuse, match="too large"):
        quantize_multiplier(0.75)


@given(acc=st.integers(-(2**26), 2**26), real=st.floats(min_value=1e-6, max_value=0.49))
def test_requantize_is_symmetric_and_within_one_of_exact(acc: int, real: float) -> None:
    m, t = quantize_multiplier(real)
    out = int(requantize(np.array([acc]), np.array([m]), np.array([t]))[0])
    back = int(requantize(np.array([-acc]), np.array([m]), np.array([t]))[0])
    assert back == -out
    exact = Fraction(acc) * Fraction(m, 2 ** (32 + t))
    assert abs(Fraction(out) - exact) <= 1


def test_tanh_table_is_odd_and_saturates() -> None:
    lut = tanh_lut()
    assert lut[128] == 0 and lut[0] == -127 and lut[255] == 127
    assert np.array_equal(lut[1:128], -lut[129:][::-1])


def test_quantisation_costs_little_auc_on_synthetic_data() -> None:
    benign, test, attack = make_data()
    rows = compare_float_int8(benign, np.r_[test, attack],
                              np.r_[np.zeros(len(test)), np.ones(len(attack))])
    for row in rows:
        print(f"\n{row.model}: AUC float {row.auc_float:.4f} int8 {row.auc_int8:.4f}")
        assert row.auc_int8 > row.auc_float - 0.01


@pytest.mark.slow
@needs_shared("data", "skab")
def test_quantisation_costs_little_auc_on_skab() -> None:
    result = skab_compare(SKAB)
    for model, row in result.items():
        print(f"\nSKAB {model}: mean AUC float {row['auc_float']:.4f} int8 {row['auc_int8']:.4f} "
              f"over {int(row['runs'])} runs")
        assert row["runs"] >= 30
        assert row["auc_int8"] > row["auc_float"] - 0.01
