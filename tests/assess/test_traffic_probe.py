"""traffic-analysis: the eavesdropper classifier on a tinyward device's captured uplink.

A real fleet server (`tinyward fleet serve`), a real enrolled device folder, its own link
through a recording proxy. Controls: shaping off (`unsafe_unshaped`, its events phase) and an
application that steers the report timing (`unsafe_inline_feed`, its application phase)
fail. The shaped device itself is assessed in the lab (`test_lab_tiers.py`).
"""

from __future__ import annotations

import re
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tinyward.assess.model import load_model
from tinyward.assess.probes.base import Budget, Context
from tinyward.assess.probes.traffic import Phase, TrafficAnalysis, phase_verdict, verdict
from tinyward.assess.target import make_target
from tinyward.fleet.pki import Fleet
from tinyward.lab.fleetproc import start_fleet_server
from tinyward.trust.device import Device

pytestmark = pytest.mark.slow
SECONDS = 60.0  # 599 intervals: the rule's minimum is 500


@dataclass
class Uplink:
    device_dirs: list[Path]
    port: int


@pytest.fixture(scope="module")
def uplink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uplink]:
    base = tmp_path_factory.mktemp("traffic")
    passphrase = secrets.token_urlsafe(16).encode()
    fleet = Fleet.init(base / "fleet", passphrase)
    dirs = []
    for name in ("a", "b"):  # one device per test: each run's report numbers are its own
        device = Device.init(base / name)
        device.install(fleet.enroll(device.enrolment_request, passphrase))
        dirs.append(base / name)
    server, url = start_fleet_server(fleet.directory, None,
                                     extra=("--rate", "1000", "--burst", "1000"))
    try:
        yield Uplink(dirs, int(url.rsplit(":", 1)[1]))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)


def auc(text: str, phase: str) -> float:
    found = re.search(re.escape(phase) + r": AUC ([0-9.]+)", text)
    assert found, text
    return float(found.group(1))


def run(uplink: Uplink, which: int, seconds: float = SECONDS, **options: Any
        ) -> tuple[str, str]:
    target = make_target(address="127.0.0.1", device_dir=uplink.device_dirs[which],
                         uplink_port=uplink.port)
    evidence = TrafficAnalysis(seconds=seconds, **options).run(
        target, Context(load_model()), Budget(200, 10))
    assert [e.requirement for e in evidence] == ["C-TRAFFIC-1"]
    return evidence[0].verdict, evidence[0].text


def test_traffic_verdicts() -> None:
    context = Context(load_model())
    quiet = Phase("random events", 0.52, (0.45, 0.56), 599, positives=300)
    loud = Phase("application steering its latency", 0.97, (0.45, 0.56), 599, positives=300)
    # 599 intervals: the null SD is 0.0236, so a fail needs AUC > 0.583.
    small_leak = Phase("random events", 0.57, (0.45, 0.55), 599, positives=300)
    short = Phase("random events", 0.97, (0.39, 0.63), 299)  # too few intervals to decide
    below_chance_max = Phase("random events", 0.60, (0.45, 0.61), 599, positives=300)
    assert abs(quiet.fail_above - 0.5 - 3.5 * 0.02357) < 0.001
    assert phase_verdict(quiet) == "pass" and phase_verdict(loud) == "fail"
    assert phase_verdict(small_leak) == "not-tested"
    assert phase_verdict(short) == "not-tested"
    assert phase_verdict(below_chance_max) == "not-tested"
    assert verdict([quiet, quiet], context)[0].verdict == "pass"
    assert verdict([quiet, loud], context)[0].verdict == "fail"
    assert verdict([loud], context)[0].verdict == "fail"  # one phase suffices to fail
    assert verdict([quiet, small_leak], context)[0].verdict == "not-tested"
    assert verdict([quiet], context)[0].verdict == "not-tested"  # a phase missing
    assert verdict([], context)[0].verdict == "not-tested"


def test_control_shaping_off_fails(uplink: Uplink) -> None:
    verdict_, text = run(uplink, 0, unsafe_unshaped=True, phases=("events",))
    assert verdict_ == "fail" and auc(text, "random events") > 0.55, text
    print(text)  # the figures, for the report (pytest -s)


def test_control_an_application_that_steers_the_timing_fails(uplink: Uplink) -> None:
    verdict_, text = run(uplink, 1, unsafe_inline_feed=True, phases=("app",))
    assert verdict_ == "fail", text
    assert auc(text, "application steering its latency") > 0.55, text
    print(text)


def test_without_an_uplink_port_it_is_not_tested(tmp_path: Path) -> None:
    Device.init(tmp_path / "d")
    target = make_target(device_dir=tmp_path / "d")
    evidence = TrafficAnalysis().run(target, Context(load_model()), Budget(10, 5))
    assert evidence[0].verdict == "not-tested" and "--uplink-port" in evidence[0].text


def test_a_budget_too_short_for_500_intervals_runs_nothing_and_says_what_to_give(
        tmp_path: Path) -> None:
    Device.init(tmp_path / "d")
    target = make_target(address="127.0.0.1", device_dir=tmp_path / "d", uplink_port=9)
    evidence = TrafficAnalysis().run(target, Context(load_model()), Budget(120, 5))
    assert evidence[0].verdict == "not-tested"
    assert "--seconds-per-probe 125" in evidence[0].text, evidence[0].text
