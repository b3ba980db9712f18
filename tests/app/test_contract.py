"""The output contract: one test per way a result can break it; rate limit; leakage bound."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyward.app.contract import RateLimiter, check_result, leakage_bits_per_result, leakage_bound
from tinyward.app.errors import ContractViolation
from tinyward.app.manifest import parse_manifest

from .test_manifest import GOOD

CONTRACT = parse_manifest(GOOD, Path("/x")).contract
OK = {"count": 3, "state": "normal", "level": 0.75, "door": True}


def violation(result: object) -> str:
    with pytest.raises(ContractViolation) as info:
        check_result(CONTRACT, result)
    return info.value.kind


def test_good_result_passes():
    assert check_result(CONTRACT, dict(OK)) == OK
    assert check_result(CONTRACT, {**OK, "level": 1}) is not None  # an int on the grid


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"count": "3"}, "wrong_type"),
        ({"count": 3.0}, "wrong_type"),
        ({"count": True}, "wrong_type"),  # bool is an int in Python, not in the contract
        ({"count": 1000}, "out_of_range"),
        ({"count": -1}, "out_of_range"),
        ({"state": "panic"}, "out_of_range"),
        ({"state": b"normal"}, "wrong_type"),
        ({"level": 0.3}, "out_of_range"),  # off the 0.25 grid: would smuggle bits
        ({"level": float("nan")}, "out_of_range"),
        ({"level": 1.25}, "out_of_range"),
        ({"level": "0.5"}, "wrong_type"),
        ({"door": 1}, "wrong_type"),
        ({"extra": 1}, "extra_field"),
        ({"raw": b"\x00" * 40}, "extra_field"),
    ],
)
def test_each_violation_has_its_kind(change, kind):
    assert violation({**OK, **change}) == kind


def test_missing_field():
    assert violation({k: v for k, v in OK.items() if k != "door"}) == "missing_field"


def test_not_a_map():
    assert violation([1, 2]) == "not_a_map"
    assert violation(None) == "not_a_map"


def test_rate_limit_sliding_window():
    limiter = RateLimiter(3)
    for t in (0.0, 1.0, 2.0):
        limiter.admit(t)
    with pytest.raises(ContractViolation) as info:
        limiter.admit(59.0)
    assert info.value.kind == "too_frequent"
    limiter.admit(60.0)  # the result at t=0 has left the window
    with pytest.raises(ContractViolation):
        limiter.admit(60.5)


def test_leakage_bound():
    bound = leakage_bound(CONTRACT)
    expected = math.log2(1000) + 1 + math.log2(5) + 1
    assert bound.bits_per_result == pytest.approx(expected)
    assert bound.bits_per_minute == pytest.approx(expected * 60)
    assert bound.bits_per_day == pytest.approx(expected * 60 * 1440)
    assert leakage_bits_per_result(CONTRACT) == bound.bits_per_result


def test_people_counter_bound_is_about_ten_bits_per_result():
    text = GOOD.split("level =")[0]
    bound = leakage_bound(parse_manifest(text, Path("/x")).contract)
    assert bound.bits_per_result == pytest.approx(math.log2(1000) + 1)  # 10.97 bits


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.dictionaries(st.sampled_from(["count", "state", "level", "door", "x"]),
                       st.one_of(st.integers(-5, 1005), st.floats(allow_nan=True), st.booleans(),
                                 st.text(max_size=8), st.none()), max_size=5))
def test_fuzz_result_is_accepted_only_if_in_the_declared_sets(result):
    try:
        check_result(CONTRACT, result)
    except ContractViolation:
        return
    assert set(result) == {"count", "state", "level", "door"}
    assert type(result["count"]) is int and 0 <= result["count"] <= 999
    assert result["state"] in ("normal", "anomaly")
    assert result["level"] in (0, 0.25, 0.5, 0.75, 1)
    assert type(result["door"]) is bool


# ---- issue 12, item 3: the bound over every channel ----------------------------------

def test_channel_bound_counts_placement_and_faults_exactly_for_one_bool_a_minute():
    from tinyward.app.contract import channel_bound
    from tinyward.app.manifest import Contract, FieldSpec

    one_bool = Contract((FieldSpec("flag", "bool"),), max_results_per_minute=1)
    bound = channel_bound(one_bool, report_interval=10, fault_window=60)
    # 6 reports a minute: no result, or a true/false in one of them: 1 + 6 * 2 outcomes.
    assert bound.values + bound.placement == pytest.approx(math.log2(13))
    assert bound.faults == pytest.approx(2.0)  # none, crash, stall, refused: once a minute
    assert bound.total == pytest.approx(math.log2(13) + 2)


def test_channel_bound_is_finite_for_the_largest_contracts():
    from tinyward.app.contract import channel_bound
    from tinyward.app.manifest import Contract, FieldSpec

    big = Contract(tuple(FieldSpec(f"f{i}", "int", min=-(2**62), max=2**62) for i in range(32)),
                   max_results_per_minute=60_000)
    bound = channel_bound(big, report_interval=0.01, fault_window=0.1)
    assert math.isfinite(bound.total) and bound.total > bound.values > 0
