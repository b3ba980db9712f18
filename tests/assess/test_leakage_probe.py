"""leakage: a hostile application with the device's own contract, in tinyward's real
sandbox and supervisor, against the declared bits-per-minute bound.

The device's application is the good counter of tests/app/good (count 0..999, state of
two values, 60 results a minute: 657.9 bits a minute declared). Control: the supervisor
with its contract check switched off (``unsafe_no_contract``) lets the exceed phase's
undeclared field out, and the probe fails.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinyward.app.supervisor import SupervisorConfig
from tinyward.assess.model import load_model
from tinyward.assess.probes.base import Budget, Context
from tinyward.assess.probes.leakage import Leakage, Phase, verdict
from tinyward.assess.target import make_target

pytestmark = pytest.mark.slow
GOOD = Path(__file__).resolve().parents[1] / "app" / "good"
BOUND = 60 * (9.964 + 1)  # log2(1000) + log2(2) bits per result, 60 results a minute


@pytest.fixture
def app() -> Iterator[Path]:
    # Under /tmp and world-readable: the sandbox's uid must read the application.
    root = Path(tempfile.mkdtemp(prefix="tinyward-assess-leak-", dir="/tmp"))
    root.chmod(0o755)
    shutil.copytree(GOOD, root / "good")
    for folder, _dirs, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    yield root / "good" / "sensor.toml"
    shutil.rmtree(root, ignore_errors=True)


def test_leakage_verdicts() -> None:
    context = Context(load_model())

    def phase(name: str, right: int, minutes: float = 1.0) -> Phase:
        return Phase(name, 100, 10, right, 0, minutes, {})

    def one(phases: list[Phase]) -> str:
        (evidence,) = verdict(100.0, phases, context)
        return evidence.verdict

    assert one([phase("saturate", 90), phase("exceed", 0)]) == "pass"
    assert one([phase("saturate", 90), phase("exceed", 500)]) == "fail"
    assert one([phase("saturate", 90)]) == "not-tested"  # exceed never ran
    assert one([phase("saturate", 90), Phase("exceed", 0, 0, 0, 0, 0.0, {})]) == "not-tested"
    # chance is not leakage: 20 right and 20 wrong of 40 bits is nothing got out
    assert Phase("x", 1, 1, 20, 20, 1.0, {}).bits_per_minute == 0.0
    # per 60 s window touched: a burst in 10 s is not six times the rate, and 1.5 minutes
    # may hold two windows' worth of results
    assert Phase("x", 1, 1, 100, 0, 10 / 60, {}).bits_per_minute == 80.0
    assert Phase("x", 1, 1, 200, 0, 1.5, {}).bits_per_minute == \
        pytest.approx((200 - 2 * math.sqrt(200)) / 2)


def test_the_contract_holds_a_hostile_app_within_the_declared_bound(app: Path) -> None:
    target = make_target(app_manifest=app)
    (evidence,) = Leakage().run(target, Context(load_model()), Budget(120, 200))
    assert evidence.requirement == "C-LEAK-1"
    assert evidence.verdict == "pass", evidence.text
    assert "declared bound 657.9 bits/min" in evidence.text, evidence.text
    # The measurement measures: within the contract the hostile app gets close to the
    # bound (9 of 9.97 bits of count, 1 of state, each result), and its undeclared field
    # is refused every time.
    saturate = evidence.text.split("saturate: ")[1]
    assert 0.8 * BOUND < float(saturate.split(" bits/min")[0]) <= BOUND, evidence.text
    assert "exceed: 0.0 bits/min got out" in evidence.text and "extra_field" in evidence.text


def test_unsafe_control_without_the_contract_check_the_hostile_app_exceeds_the_bound(
    app: Path,
) -> None:
    unchecked = SupervisorConfig(cpu_share=None, max_failed_starts=1000,
                                 unsafe_no_contract=True)
    target = make_target(app_manifest=app)
    (evidence,) = Leakage(unchecked).run(target, Context(load_model()), Budget(120, 200))
    assert evidence.verdict == "fail", evidence.text
    assert "exceed:" in evidence.text and "declared bound of 657.9" in evidence.text


def test_no_manifest_is_not_tested() -> None:
    target = make_target(address="127.0.0.1")
    (evidence,) = Leakage().run(target, Context(load_model()), Budget(5, 5))
    assert evidence.verdict == "not-tested" and "--app" in evidence.text


def test_decoding_counts_only_the_frame_bits_a_field_carries() -> None:
    from tinyward.assess.probes.leakage import decode

    plan = [["count", "int", 0, None, [], 9], ["state", "enum", None, None, ["a", "b"], 1],
            ["on", "bool", None, None, [], 1]]
    data = bytes([0b10110011, 0b01000000])
    # count = first 9 bits 101100110 = 358, state = bit 9 (1) -> "b", on = bit 10 (0)
    assert decode({"count": 358, "state": "b", "on": False}, plan, data) == (11, 0)
    assert decode({"count": 358 ^ 1, "state": "a", "on": False}, plan, data) == (9, 2)
    # a field past the frame's end carries nothing countable
    assert decode({"count": 256}, [["count", "int", 0, None, [], 9]], b"\x80") == (8, 0)
    # an undeclared raw field is read byte for byte
    assert decode({"raw": "b340"}, [], data) == (16, 0)
