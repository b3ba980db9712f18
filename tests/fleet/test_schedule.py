"""A device's declared report schedule in the fleet's records (issue 12, item 6).

The server's side (the rate limit that follows it) is attacked in
tests/fleet/test_attacks_server.py; these check what is recorded, its bounds, and that
fleets and devices from before schedules still open.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyward.fleet.errors import BadFleet, BadSchedule
from tinyward.fleet.pki import (
    DEFAULT_REPORT_INTERVAL,
    FLEET_FILE,
    STATUS_FILE,
    Fleet,
    check_report_interval,
)

from .helpers import PASSPHRASE, request_pem


def _enrol(fleet: Fleet, **kw: float) -> str:
    return fleet.enroll(request_pem(), PASSPHRASE, **kw).device_id  # type: ignore[arg-type]


def test_enrolment_records_the_declared_schedule(fleet: Fleet) -> None:
    declared = _enrol(fleet, report_interval=60)
    default = _enrol(fleet)
    assert fleet.device(declared).report_interval == 60.0
    assert fleet.device(default).report_interval == DEFAULT_REPORT_INTERVAL
    status = json.loads((fleet.devices_path / declared / STATUS_FILE).read_text())
    assert status["report_interval"] == 60.0


@pytest.mark.parametrize("bad", [0, 0.5, -10, 86401, float("nan"), float("inf"), "10", True])
def test_schedules_out_of_bounds_are_refused_and_nothing_is_recorded(
        fleet: Fleet, bad: object) -> None:
    with pytest.raises(BadSchedule, match=r"1 to 86400 seconds|number of seconds"):
        fleet.enroll(request_pem(), PASSPHRASE, report_interval=bad)  # type: ignore[arg-type]
    assert fleet.devices() == []


def test_bounds_are_inclusive() -> None:
    assert check_report_interval(1) == 1.0
    assert check_report_interval(86400) == 86400.0


def test_the_fleet_default_comes_from_init(tmp_path: Path) -> None:
    made = Fleet.init(tmp_path / "f", PASSPHRASE, report_interval=30)
    assert Fleet.open(made.directory).report_interval == 30.0
    assert Fleet.open(made.directory).device(_enrol(made)).report_interval == 30.0
    with pytest.raises(BadSchedule):
        Fleet.init(tmp_path / "g", PASSPHRASE, report_interval=0.1)
    assert not (tmp_path / "g").exists()


def test_set_schedule_changes_only_the_schedule(fleet: Fleet) -> None:
    device_id = _enrol(fleet)
    fleet.revoke(device_id)
    changed = fleet.set_schedule(device_id, 3600)
    assert changed.report_interval == 3600.0 and changed.revoked
    fleet.set_schedule(device_id, 5)
    assert fleet.device(device_id).revoked  # revocation kept
    with pytest.raises(BadSchedule):
        fleet.set_schedule(device_id, 100_000)
    assert fleet.device(device_id).report_interval == 5.0


def test_revoking_keeps_the_schedule(fleet: Fleet) -> None:
    device_id = _enrol(fleet, report_interval=120)
    fleet.revoke(device_id)
    assert fleet.device(device_id).report_interval == 120.0


def test_records_from_before_schedules_still_open(fleet: Fleet) -> None:
    device_id = _enrol(fleet)
    for path, key in ((fleet.devices_path / device_id / STATUS_FILE, "report_interval"),
                      (fleet.directory / FLEET_FILE, "report_interval")):
        document = json.loads(path.read_text())
        del document[key]
        path.write_text(json.dumps(document))
    reopened = Fleet.open(fleet.directory)
    assert reopened.report_interval == DEFAULT_REPORT_INTERVAL
    assert reopened.device(device_id).report_interval is None  # the server's fallback


def test_a_damaged_schedule_is_a_damaged_record(fleet: Fleet) -> None:
    device_id = _enrol(fleet)
    path = fleet.devices_path / device_id / STATUS_FILE
    document = json.loads(path.read_text())
    document["report_interval"] = 0.001  # someone edited it to lift the device's limit
    path.write_text(json.dumps(document))
    with pytest.raises(BadFleet, match="damaged"):
        fleet.device(device_id)


def test_buckets_take_each_keys_own_rate() -> None:
    from tinyward.fleet.guards import TokenBuckets

    buckets = TokenBuckets(rate=100.0, burst=2)
    slow, fast = 2 / 10, 2 / 1  # twice a 10 s and a 1 s schedule
    assert buckets.take("slow", 2, 0.0, slow) is None
    assert buckets.take("fast", 2, 0.0, fast) is None
    assert buckets.take("slow", 1, 1.0, slow) == pytest.approx((1 - 0.2) / 0.2)  # 4 s to wait
    assert buckets.take("fast", 1, 1.0, fast) is None
    assert buckets.take("slow", 1, 0.0, slow) is not None  # a clock going back adds nothing
    assert buckets.take("slow", 3, 99.0, slow) == float("inf")  # never: over the burst
