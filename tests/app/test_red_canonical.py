"""Red-team variant of issue 12, item 3: a result's *encoding* is not a channel.

The leakage bound counts log2(distinct values) per field. But an accepted result used to
go into the report exactly as the app built it, so the app also chose, unseen by the bound:
the order of the fields (n! orders: 1 bit per result with two fields), the low mantissa
bits of a float within the grid tolerance (0.5 + 2**-40 passed as 0.5: ~20 more bits),
negative zero, and int-or-float in a float field. Each reached the signed report and the
fleet's database (the store keeps the map's order). Now the core forwards its own
canonical copy: fields in the contract's order, floats snapped to their grid point.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import cbor2
import pytest

from tinyward.app.contract import check_result
from tinyward.app.manifest import parse_manifest
from tinyward.assess.hostile_apps import source

from .test_hostile_cbor import hostile, run_payloads  # noqa: F401 (fixture)

HERE = Path(__file__).parent
CONTRACT = parse_manifest(
    (source("raw_cbor") / "sensor.toml").read_text().replace(
        'models = ["target.json"]', "models = []"), HERE / "good").contract
REFERENCE = {"count": 1, "state": "normal", "score": 0.5}


def _variants() -> list[dict[str, object]]:
    """The same declared value, spelt by the app in ways that differ on the wire."""
    return [
        {"score": 0.5, "state": "normal", "count": 1},           # field order
        {"count": 1, "state": "normal", "score": 0.5 + 2**-40},   # float below the tolerance
        {"count": 1, "state": "normal", "score": math.nextafter(0.5, 1.0)},
    ]


def _zero_variants() -> list[dict[str, object]]:
    return [{"count": 1, "state": "normal", "score": -0.0},      # negative zero
            {"count": 1, "state": "normal", "score": 0}]          # an int in a float field


def test_every_spelling_of_one_value_leaves_as_the_same_bytes() -> None:
    reference = cbor2.dumps(check_result(CONTRACT, dict(REFERENCE)))
    for variant in _variants():
        assert cbor2.dumps(check_result(CONTRACT, variant)) == reference, variant
    zero = cbor2.dumps(check_result(CONTRACT, {"count": 1, "state": "normal", "score": 0.0}))
    for variant in _zero_variants():
        assert cbor2.dumps(check_result(CONTRACT, variant)) == zero, variant


def test_a_float_just_off_the_grid_carries_no_extra_bits() -> None:
    # 2**20 spellings of 0.5 the contract accepts: each must leave as one value.
    seen = {cbor2.dumps(check_result(CONTRACT, {**REFERENCE, "score": 0.5 + k * 2**-52}))
            for k in range(0, 2**20, 4099)}
    assert len(seen) == 1


def _half_float_minus_zero() -> bytes:
    return b"\xf9" + struct.pack(">e", -0.0)


@pytest.mark.slow
def test_sandboxed_app_spelling_one_value_many_ways_is_forwarded_canonically(hostile) -> None:  # noqa: F811
    payloads = [cbor2.dumps(v) for v in _variants()]
    # hand-built: score = half-float -0.0 (cbor2 would write it the same, but be explicit)
    payloads.append(b"\xa3" + cbor2.dumps("count") + b"\x01" + cbor2.dumps("state")
                    + cbor2.dumps("normal") + cbor2.dumps("score") + _half_float_minus_zero())
    sup, outcomes = run_payloads(hostile, payloads)
    with sup:
        assert all(o.incident is None for o in outcomes), sup.incidents()
        reference = cbor2.dumps(REFERENCE)
        for outcome in outcomes[:3]:
            assert cbor2.dumps(outcome.result) == reference
        assert cbor2.dumps(outcomes[3].result) == cbor2.dumps({**REFERENCE, "score": 0.0})
