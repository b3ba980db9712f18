"""Issue 12, item 1: nothing an application sends can raise out of the trusted core.

The ``raw_cbor`` hostile app puts arbitrary CBOR bytes where its result goes, in the real
sandbox. Before the fix, a 5,000-digit integer made the contract check raise ValueError
(formatting it), 10**400 in a float field raised OverflowError, and so did a huge integer
used as a map key: ``device run`` died with a traceback, again after every restart.
Now each of these is a contract fault: an incident, the app killed and restarted.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyward.app.manifest import load_manifest
from tinyward.app.sandbox import SandboxConfig
from tinyward.app.supervisor import Supervisor, SupervisorConfig
from tinyward.assess.hostile_apps import copy_app

from .conftest import TRIGGER, FakeClock, frame

pytestmark = pytest.mark.slow



@pytest.fixture
def hostile():
    """Copies of the raw_cbor app (one per call: hypothesis calls many times per test)."""
    outer = Path(tempfile.mkdtemp(prefix="tinyward-cbor-", dir="/tmp"))
    outer.chmod(0o755)
    count = [0]

    def make(payloads: list[bytes]) -> Path:
        count[0] += 1
        folder = outer / f"app{count[0]}"
        copy_app("raw_cbor", folder)
        (folder / "target.json").write_text(json.dumps({"payloads": [p.hex() for p in payloads]}))
        for root, _dirs, files in os.walk(folder):
            os.chmod(root, 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        return folder / "sensor.toml"

    yield make
    shutil.rmtree(outer, ignore_errors=True)


def run_payloads(hostile, payloads: list[bytes]) -> tuple[Supervisor, list]:
    """Send each payload as a result (one trigger frame each, an ordinary frame between)."""
    clock = FakeClock()
    manifest = hostile(payloads)
    sup = Supervisor(load_manifest(manifest), SandboxConfig(frame_deadline_s=5.0),
                     SupervisorConfig(backoff_initial_s=1.0, backoff_max_s=1.0,
                                      max_failed_starts=100, fault_window_s=0.0), clock)
    outcomes: list = []
    try:
        assert sup.start(), sup.incidents()
        for index in range(len(payloads)):
            trigger = frame(TRIGGER)
            trigger[1, 0] = index  # (a restarted app reads its payloads afresh)
            outcome = sup.process(trigger)  # must not raise, whatever the payload
            outcomes.append(outcome)
            clock.advance(1.0)
            assert sup.process(frame()).result == {"count": 1, "state": "normal", "score": 0.5}
    except BaseException:
        sup.close()
        raise
    return sup, outcomes


def result_with(**fields: object) -> bytes:
    return cbor2.dumps({"count": 1, "state": "normal", "score": 0.5, **fields})


def test_a_5000_digit_count_is_a_contract_fault(hostile) -> None:
    sup, (outcome,) = run_payloads(hostile, [result_with(count=10**5000)])
    with sup:
        assert outcome.incident == "not_cbor"  # a bignum tag: refused by the decoder
        assert sup.incidents() == {"not_cbor": 1} and sup.healthy


def test_a_float_field_of_ten_to_the_400_is_a_contract_fault(hostile) -> None:
    sup, (outcome,) = run_payloads(hostile, [result_with(score=10**400)])
    with sup:
        assert outcome.incident == "not_cbor"
        assert sup.incidents() == {"not_cbor": 1}


def test_a_huge_integer_map_key_is_a_contract_fault(hostile) -> None:
    payload = cbor2.dumps({"count": 1, "state": "normal", "score": 0.5, 10**5000: 1})
    sup, (outcome,) = run_payloads(hostile, [payload])
    with sup:
        assert outcome.incident == "not_cbor"


def test_64_bit_integers_at_the_edge_are_checked_without_formatting(hostile) -> None:
    # No tag needed for these: CBOR's own heads reach 2**64 - 1 and -2**64.
    payloads = [result_with(count=2**64 - 1), result_with(count=-(2**64)),
                result_with(score=2**63 - 1), cbor2.dumps({2**63 - 1: 1})]
    sup, outcomes = run_payloads(hostile, payloads)
    with sup:
        assert [o.incident for o in outcomes] == ["not_cbor", "not_cbor", "out_of_range",
                                                  "extra_field"]


@pytest.mark.parametrize("value", [
    datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),  # tag 0
    {1, 2},                                                        # tag 258
    cbor2.CBORTag(4, [-2, 10**30]),                                # decimal with a bignum
    cbor2.CBORTag(55799, {"count": 1}),                            # self-described CBOR
], ids=["datetime", "set", "decimal", "self_described"])
def test_a_tagged_result_is_refused(hostile, value: object) -> None:
    sup, (outcome,) = run_payloads(hostile, [cbor2.dumps(value)])
    with sup:
        assert outcome.incident == "not_cbor"


def test_a_deeply_nested_result_is_refused(hostile) -> None:
    sup, (outcome,) = run_payloads(hostile, [b"\x81" * 50_000 + b"\x00"])
    with sup:
        assert outcome.incident == "not_cbor"


# ---- the property: arbitrary CBOR where results go ---------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18),
    st.sampled_from([5000, 400]).map(lambda e: 10**e),  # never repr'd by hypothesis
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.binary(max_size=20),
    st.sampled_from(["normal", "anomaly", "count", "state", "score"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(), st.sampled_from(
            ["count", "state", "score"])), inner, max_size=4),
        st.builds(cbor2.CBORTag, st.integers(min_value=0, max_value=2**64 - 1), inner),
    ),
    max_leaves=12,
)
_raw = st.one_of(
    _values.map(cbor2.dumps),
    st.builds(lambda c, s, f: result_with(count=c, state=s, score=f),
              st.one_of(st.integers(), st.floats(), st.none(), _scalars),
              st.one_of(st.text(max_size=8), st.integers()),
              st.one_of(st.floats(), st.integers(), _scalars)),
    st.binary(min_size=1, max_size=40),                         # not CBOR at all, mostly
    st.integers(1, 3000).map(lambda n: b"\x81" * n + b"\x00"),  # deep
    st.integers(1, 3000).map(lambda n: b"\xa1\x00" * n + b"\x00"),
)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(payloads=st.lists(_raw, min_size=1, max_size=6))
def test_property_the_core_never_raises_on_any_cbor_where_results_go(
    hostile, payloads: list[bytes]
) -> None:
    sup, outcomes = run_payloads(hostile, payloads)
    with sup:
        faults = [o for o in outcomes if o.incident is not None]  # type: ignore[attr-defined]
        assert sum(sup.incidents().values()) == len(faults)
        for outcome in outcomes:
            if outcome.result is not None:  # type: ignore[attr-defined]
                assert outcome.result == {"count": 1, "state": "normal", "score": 0.5} or set(
                    outcome.result) == {"count", "state", "score"}  # type: ignore[attr-defined]
