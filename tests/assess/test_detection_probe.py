"""on-device-detection: a scan of a watched tinyward device, in a network namespace this
test creates (root), must reach the fleet in a stored report.

The lab is tests/link/test_watch_netns.py's (a device namespace, a real fleet server on
the host end, a net model trained on the device's own benign traffic with `detect
train`). The device runs as `tinyward device run --watch eth0 --net-model M`; the probe,
on the host end as a scanner on the LAN would be, sweeps 200 ports and reads the fleet's
store. Control: the same device without `--watch` fails.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.conftest import needs
from tests.link.test_watch_netns import Lab, lab, net_model  # noqa: F401 - the fixtures
from tinyward.assess.model import load_model
from tinyward.assess.probes.base import Budget, Context
from tinyward.assess.probes.detection import (
    QUIET_SECONDS,
    Observed,
    OnDeviceDetection,
    shown_store,
    verdict,
)
from tinyward.assess.target import make_target
from tinyward.bench.watch_traffic import BenignTraffic
from tinyward.link.watch import DEFAULT_NET_WARMUP

pytestmark = [pytest.mark.slow,
              needs(os.geteuid() == 0 and shutil.which("ip") is not None,
                    "needs root and iproute2 (network namespaces, a capture socket)")]


def test_detection_verdicts() -> None:
    context = Context(load_model())
    quiet = [(1, ()), (2, ("app_crash",))]

    def one(observed: Observed) -> str:
        (evidence,) = verdict(observed, context)
        assert evidence.requirement == "A-DETECT-1"
        return evidence.verdict

    assert one(Observed(quiet, [(3, ()), (4, ("net.anomaly",))], 200, 200)) == "pass"
    assert one(Observed(quiet, [(3, ()), (4, ()), (5, ())], 200, 200)) == "fail"
    assert one(Observed(quiet, [(3, ())], 200, 200)) == "not-tested"  # too few to decide
    assert one(Observed([], [])) == "not-tested"  # the device is not reporting
    assert one(Observed([(1, ("net.novel",))], [(2, ("net.novel",))], 200, 200)) == \
        "not-tested"  # alarms before the scan: the scan's cannot be told apart
    assert one(Observed(quiet, [])) == "not-tested"  # no scan sent
    # net incidents kept coming (an earlier probe's traffic) and never settled: no scan
    assert one(Observed([], [], noisy=4, note="0 quiet report(s) in 77 s")) == "not-tested"
    # the quiet phase outlasts the watcher's warm-up, whose alarms are dropped by design
    assert QUIET_SECONDS > DEFAULT_NET_WARMUP


def test_a_report_with_a_net_incident_starts_the_quiet_stretch_again() -> None:
    from tinyward.assess.probes.detection import _Streak

    class Store:
        def __init__(self) -> None:
            self.rows: list[tuple[int, tuple[str, ...]]] = []

        def since(self, seq: int) -> list[tuple[int, tuple[str, ...]]]:
            return [r for r in self.rows if r[0] > seq]

    now = [100.0]
    store, streak = Store(), _Streak(0, clock=lambda: now[0])
    store.rows = [(1, ()), (2, ("net.anomaly",)), (3, ())]  # an earlier probe's echo
    assert not streak.quiet_for(store, 17) and (streak.seq, streak.noisy) == (2, 1)
    now[0], store.rows = 118.0, [*store.rows, (4, ())]
    assert streak.quiet_for(store, 17)  # 18 s and 2 reports without one
    now[0], store.rows = 119.0, [*store.rows, (5, ("net.novel",))]
    assert not streak.quiet_for(store, 17) and (streak.seq, streak.noisy) == (5, 2)


def _probe(world: Lab, *device_args: str) -> tuple[str, str, str]:
    with BenignTraffic(world.ns):  # the device's normal life, as the model was trained on
        return _probe_in(world, *device_args)


def _probe_in(world: Lab, *device_args: str) -> tuple[str, str, str]:
    proc = world.device_run(*device_args, duration=QUIET_SECONDS + 45)
    try:
        # The test made this namespace: it names the device's address (the probe runs on
        # the host end of the veth pair, where the scanner of the LAN would be).
        target = make_target(address=world.ns.device_address, named=True,
                             device_dir=world.device.directory,
                             fleet_store=str(world.fleet.directory / "reports.db"))
        (evidence,) = OnDeviceDetection().run(target, Context(load_model()),
                                              Budget(120, 200))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    return evidence.verdict, evidence.text, out


def test_a_watched_device_reports_the_scan_to_its_fleet(lab: Lab, net_model: Path) -> None:  # noqa: F811
    verdict_, text, out = _probe(lab, "--watch", lab.ns.device_if, "--net-model",
                                 str(net_model))
    print(text)
    assert verdict_ == "pass", (text, out)
    assert "200-port connect sweep" in text and "net." in text, text


def test_unsafe_control_a_device_that_does_not_watch_fails(lab: Lab) -> None:  # noqa: F811
    verdict_, text, out = _probe(lab)
    assert verdict_ == "fail", (text, out)
    assert "none of the 3 reports made after it" in text, text


def test_a_store_password_is_never_shown(tmp_path: Path) -> None:
    assert shown_store("postgresql://fleet:s3cret@10.77.0.5:5432/reports") == \
        "postgresql://fleet:***@10.77.0.5:5432/reports"
    assert shown_store("/srv/fleet/reports.db") == "/srv/fleet/reports.db"
    (tmp_path / "device.json").write_text('{"device_id": "ab"}')
    target = make_target(address="127.0.0.1", device_dir=tmp_path,
                         fleet_store="postgresql://fleet:s3cret@127.0.0.1:1/reports")
    (evidence,) = OnDeviceDetection().run(target, Context(load_model()), Budget(5, 5))
    assert evidence.verdict == "not-tested" and "s3cret" not in evidence.text + evidence.where


def test_no_fleet_store_is_not_tested(tmp_path: Path) -> None:
    target = make_target(address="127.0.0.1", device_dir=tmp_path)
    (evidence,) = OnDeviceDetection().run(target, Context(load_model()), Budget(5, 5))
    assert evidence.verdict == "not-tested" and "--fleet-store" in evidence.text
