"""Rollouts on a running fleet server with simulated devices (real mTLS, signed reports).

Each device asks the server for its offer (what the delivery channel calls), "installs"
it and reports the outcome in its next signed report's ``upd`` field. The server applies
the halt rule before it acknowledges a failure report, so every check below is made
right after an acknowledgement, with no waiting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest

from tinyward.fleet.rollouts import RolloutBook
from tinyward.trust.report import UpdateStatus
from tinyward.update.meta import Offer, Version

from .serverkit import Running, start_running

NAMES = tuple(f"d{i:02d}" for i in range(30))
TARGET = "app-1.1.0.tar"
NEW = Version(1, 1, 0)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    state = start_running(tmp_path, NAMES)
    yield state
    state.server.stop()


def _book(running: Running) -> RolloutBook:
    return RolloutBook(running.fleet.directory)


def _offer(running: Running, name: str, installed: str = "1.0.0") -> Offer | None:
    device_id = running.devices[name].device_id
    return running.fleet_server.offer_for(device_id, {"app": installed})


def _report_outcome(running: Running, name: str, fails: bool) -> None:
    update = (UpdateStatus("reverted", {"app": "1.0.0"}, "health-deadline", ("app", "1.1.0"))
              if fails else UpdateStatus("accepted", {"app": "1.1.0"}))
    status, body = running.post(name, running.report(name, update=update))
    assert status == 200, body


def test_rollout_halts_at_the_threshold_when_a_third_of_the_devices_fail(
        running: Running) -> None:
    halt_at, min_reports = 0.25, 6
    rollout = _book(running).start("app", "1.1.0", TARGET, percent=100, halt_at=halt_at,
                                   min_reports=min_reports)
    failed = decided = 0
    halted_after: int | None = None
    offered: list[str] = []
    for index, name in enumerate(NAMES):
        offer = _offer(running, name)
        if halted_after is not None:
            assert offer is None, f"{name} got an offer after the halt"
            continue
        assert offer == Offer("app", TARGET, NEW)
        offered.append(name)
        fails = index % 3 == 1  # a third of the devices receive an update that fails
        _report_outcome(running, name, fails)
        failed, decided = failed + fails, decided + 1
        # The stated rule, computed here on its own: halt once min_reports devices have
        # an outcome and failed / decided reaches halt_at; never before.
        due = decided >= min_reports and Fraction(failed, decided) >= Fraction(1, 4)
        now = _book(running).get(rollout.rollout_id)
        assert now.halted == due, (index, failed, decided)
        if due:
            halted_after = decided
    assert halted_after == min_reports  # 2 of 6 = 33 % >= 25 %: halted at the 6th outcome
    assert len(offered) == 6 and len(NAMES) - len(offered) == 24  # never offered
    halted = _book(running).get(rollout.rollout_id)
    assert halted.why is not None and "2 of 6" in halted.why
    audit = [json.loads(line) for line in
             (running.fleet.directory / "audit.log").read_text().splitlines()]
    assert {"method": "AUTO", "path": f"/v1/rollouts/{rollout.rollout_id}/halt",
            "outcome": "halted"}.items() <= audit[-1].items()


def test_rollout_completes_when_failures_stay_below_the_threshold(running: Running) -> None:
    book = _book(running)
    rollout = book.start("app", "1.1.0", TARGET, percent=30, halt_at=0.1, min_reports=5)
    first = [n for n in NAMES if _offer(running, n) is not None]
    assert len(first) < len(NAMES)  # (device and rollout IDs are random: which ones varies)
    for name in first:
        _report_outcome(running, name, fails=False)
    book.widen(rollout.rollout_id, 100)
    rest = [n for n in NAMES if n not in first]
    assert all(_offer(running, n) is not None for n in rest)  # widening reached them all
    # 1 of 30 fails (3 %, under 10 %); the last to report, so no small early sample can
    # reach the threshold by chance.
    fail = {rest[-1]}
    for name in rest:
        _report_outcome(running, name, name in fail)
    # Devices that run the version get nothing more.
    assert all(_offer(running, n, "1.1.0") is None for n in NAMES if n not in fail)
    enrolled = [(d.device_id, d.cohort, d.revoked) for d in running.fleet.devices()]
    (status,) = book.status(running.store, enrolled, rollout.rollout_id)
    assert not status.rollout.halted
    assert status.counted.outcomes == {"updated": 29, "failed": 1, "in-progress": 0,
                                       "waiting": 0}
    assert status.to_json()["complete"] is True


def test_failures_of_a_revoked_device_do_not_count(running: Running) -> None:
    book = _book(running)
    rollout = book.start("app", "1.1.0", TARGET, percent=100, halt_at=0.5, min_reports=2)
    a, b, c, d = NAMES[:4]
    _report_outcome(running, a, fails=True)  # 1 of 1: under the minimum
    running.fleet.revoke(running.devices[a].device_id)
    # The revoked device's forged failure reports are refused before anything is stored.
    status, body = running.post(a, running.report(a, update=UpdateStatus(
        "failed", {"app": "1.0.0"}, "x", ("app", "1.1.0"))))
    assert status == 403 and body["error"] == "revoked"
    _report_outcome(running, b, fails=False)
    _report_outcome(running, c, fails=False)
    _report_outcome(running, d, fails=True)
    # Counting a: 2 failed of 4 = 50 %, a halt. Without it: 1 of 3 = 33 %: it goes on.
    assert not book.get(rollout.rollout_id).halted
    assert _offer(running, NAMES[5]) is not None
    assert _offer(running, a) is None  # and a revoked device is offered nothing


def test_cohort_rollouts_read_the_cohort_from_the_fleet_records(running: Running) -> None:
    canary = NAMES[:3]
    for name in canary:
        running.fleet.set_cohort(running.devices[name].device_id, "canary")
    _book(running).start("app", "1.1.0", TARGET, cohorts=("canary",))
    assert [n for n in NAMES if _offer(running, n) is not None] == list(canary)
    running.fleet.set_cohort(running.devices[canary[0]].device_id, None)  # taken out
    assert _offer(running, canary[0]) is None


def test_admin_api_rollouts_and_device_update_fields(running: Running) -> None:
    token = {"Authorization": f"Bearer {running.admin_token}",
             "Content-Type": "application/json"}
    status, made = running.request("POST", "/v1/rollouts", headers=token, body=json.dumps(
        {"component": "app", "version": "1.1.0", "target_path": TARGET, "percent": 10}).encode())
    assert status == 201 and made["percent"] == 10 and made["halted"] is False
    rid = made["id"]
    status, again = running.request("POST", "/v1/rollouts", headers=token, body=json.dumps(
        {"component": "app", "version": "1.2.0", "target_path": TARGET, "percent": 10}).encode())
    assert status == 409 and again["error"] == "rollout_conflict"
    status, wider = running.request("POST", f"/v1/rollouts/{rid}/widen", headers=token,
                                    body=b'{"percent": 50}')
    assert status == 200 and wider["stages"][-1][1] == 50
    status, narrower = running.request("POST", f"/v1/rollouts/{rid}/widen", headers=token,
                                       body=b'{"percent": 5}')
    assert status == 400 and narrower["error"] == "bad_rollout"
    status, halted = running.request("POST", f"/v1/rollouts/{rid}/halt", headers=token,
                                     body=b'{"reason": "bad build"}')
    assert status == 200 and halted["halted"] and halted["why"] == "operator: bad build"
    assert all(_offer(running, n) is None for n in NAMES)
    status, resumed = running.request("POST", f"/v1/rollouts/{rid}/resume", headers=token)
    assert status == 200 and not resumed["halted"]
    status, listed = running.request("GET", "/v1/rollouts", headers=token)
    assert status == 200 and [r["id"] for r in listed["rollouts"]] == [rid]
    status, missing = running.request("GET", "/v1/rollouts/ffffffffffffffff", headers=token)
    assert status == 404 and missing["error"] == "unknown_rollout"
    status, _ = running.request("POST", f"/v1/rollouts/{rid}/halt",
                                headers={"Content-Type": "application/json"})
    assert status == 401  # admin token required
    # The device JSON shows cohort, update state and versions from the latest report.
    name = NAMES[0]
    _report_outcome(running, name, fails=True)
    device_id = running.devices[name].device_id
    status, device = running.request("GET", f"/v1/devices/{device_id}", headers=token)
    assert status == 200 and device["cohort"] is None
    assert device["update"] == {"state": "reverted", "versions": {"app": "1.0.0"},
                                "why": "health-deadline",
                                "target": {"component": "app", "version": "1.1.0"},
                                "seq": 1}
    paths = [json.loads(line)["path"] for line in
             (running.fleet.directory / "audit.log").read_text().splitlines()]
    assert f"/v1/rollouts/{rid}/widen" in paths and f"/v1/rollouts/{rid}/resume" in paths


def test_a_damaged_rollouts_file_does_not_cost_a_report_its_acknowledgement(
        running: Running) -> None:
    book = _book(running)
    book.start("app", "1.1.0", TARGET, percent=100)
    book.path.write_text("damaged")
    _report_outcome(running, NAMES[0], fails=True)  # stored and acknowledged (200)
    assert running.store.device_status(running.devices[NAMES[0]].device_id).update.state \
        == "reverted"  # type: ignore[union-attr]


def test_quarantined_device_reports_are_kept_but_it_is_offered_nothing(
        running: Running) -> None:
    _book(running).start("app", "1.1.0", TARGET, percent=100)
    name = NAMES[0]
    device_id = running.devices[name].device_id
    assert _offer(running, name) is not None
    running.fleet.quarantine(device_id)
    assert _offer(running, name) is None  # the running server sees the changed status file
    status, body = running.post(name, running.report(name))
    assert status == 200, body  # its reports are still verified and stored: evidence
    running.fleet.release(device_id)
    assert _offer(running, name) is not None
