"""RolloutBook: the rollouts file (atomic, locked, re-read on change) and the facts it
gathers for the halt rule."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from tests.fleet.helpers import PASSPHRASE
from tinyward.fleet.errors import BadFleet, BadRollout, RolloutConflict
from tinyward.fleet.pki import Fleet
from tinyward.fleet.rollouts import RolloutBook, observations
from tinyward.fleet.store import UpdateRecord
from tinyward.lab.simdevice import SimulatedDevice
from tinyward.update.meta import Version

IDS = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(12)]


class _Facts:
    def __init__(self, enrolled: dict[str, str | None], revoked: set[str]) -> None:
        self.enrolled, self.revoked = enrolled, revoked

    def report_key(self, device_id: str) -> object | None:
        return object() if device_id in self.enrolled else None

    def is_revoked(self, device_id: str) -> bool:
        return device_id in self.revoked

    def cohort(self, device_id: str) -> str | None:
        return self.enrolled.get(device_id)


class _Store:
    def __init__(self, records: list[UpdateRecord]) -> None:
        self.records = records

    def update_records(self, component: str, version: str) -> list[UpdateRecord]:
        return self.records


def test_a_second_book_sees_each_change_and_the_file_is_private(tmp_path: Path) -> None:
    one, two = RolloutBook(tmp_path), RolloutBook(tmp_path)
    made = one.start("app", "1.1.0", "app.tar", percent=10)
    assert two.get(made.rollout_id) == made
    two.halt(made.rollout_id, "stop")
    assert one.get(made.rollout_id).halted  # re-read: the file changed
    assert os.stat(one.path).st_mode & 0o777 == 0o600
    assert os.stat(one.directory).st_mode & 0o777 == 0o700


def test_concurrent_changes_are_never_lost(tmp_path: Path) -> None:
    books = [RolloutBook(tmp_path) for _ in range(4)]
    errors: list[BaseException] = []

    def start(book: RolloutBook, component: str) -> None:
        try:
            book.start(component, "1.0.0", f"{component}.tar", percent=5)
        except BaseException as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=start, args=(b, c))
               for b, c in zip(books, ("app", "model", "detector", "config"), strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(r.component for r in RolloutBook(tmp_path).rollouts()) == [
        "app", "config", "detector", "model"]


def test_refusals_change_nothing(tmp_path: Path) -> None:
    book = RolloutBook(tmp_path)
    made = book.start("app", "1.1.0", "app.tar", percent=10)
    before = book.path.read_bytes()
    with pytest.raises(RolloutConflict):
        book.start("app", "1.2.0", "app2.tar", percent=10)
    with pytest.raises(BadRollout):
        book.widen(made.rollout_id, 5)
    assert book.path.read_bytes() == before


def test_a_damaged_file_is_refused(tmp_path: Path) -> None:
    book = RolloutBook(tmp_path)
    book.start("app", "1.1.0", "app.tar", percent=10)
    book.path.write_text('{"format": "tinyward-rollouts/1", "rollouts": [{"id": 1}]}')
    with pytest.raises(BadRollout, match="damaged"):
        RolloutBook(tmp_path).rollouts()
    book.path.write_text("not json")
    with pytest.raises(BadRollout, match="not JSON"):
        RolloutBook(tmp_path).rollouts()


def test_observations_skip_devices_not_enrolled_and_carry_cohort_and_revocation(
        tmp_path: Path) -> None:
    rollout = RolloutBook(tmp_path).start("app", "1.1.0", "app.tar", percent=100)
    records = [UpdateRecord(IDS[0], "reverted", "1.0.0", 10),
               UpdateRecord(IDS[1], "accepted", "1.1.0", None),
               UpdateRecord(IDS[2], "failed", None, 10)]
    facts = _Facts({IDS[0]: "lab", IDS[1]: None}, revoked={IDS[1]})
    seen = {o.device_id: o for o in observations(rollout, records, facts=facts)}
    assert set(seen) == {IDS[0], IDS[1]}  # IDS[2] is not enrolled here: never counted
    assert seen[IDS[0]].cohort == "lab" and seen[IDS[0]].failed_at == 10
    assert seen[IDS[1]].revoked and seen[IDS[1]].installed == Version(1, 1, 0)
    everyone = observations(rollout, records, enrolled=[(i, None, False) for i in IDS[3:6]])
    assert {o.device_id for o in everyone} == set(IDS[3:6])  # only enrolled ones


def test_evaluate_halts_once_and_writes_it(tmp_path: Path) -> None:
    audit: list[tuple[str, str, str]] = []
    book = RolloutBook(tmp_path, clock=lambda: 5000.0,
                       audit=lambda *line: audit.append(line))
    made = book.start("app", "1.1.0", "app.tar", percent=100, min_reports=2, halt_at=0.5)
    store = _Store([UpdateRecord(i, "reverted", None, 6000) for i in IDS[:2]])
    facts = _Facts(dict.fromkeys(IDS), set())
    (halted,) = book.evaluate(store, facts)  # type: ignore[arg-type]
    assert halted.halted and halted.halted_at == 5000
    assert book.evaluate(store, facts) == []  # type: ignore[arg-type]  # already halted
    assert RolloutBook(tmp_path).get(made.rollout_id).halted
    assert audit == [("start", made.rollout_id, "ok"),
                     ("auto-halt", made.rollout_id, "halted")]


def test_a_cohort_is_kept_by_revocation_and_schedules_and_a_bad_one_is_damage(
        fleet: Fleet) -> None:
    device = SimulatedDevice.enrolled(fleet, PASSPHRASE)
    assert fleet.device(device.device_id).cohort is None
    assert fleet.set_cohort(device.device_id, "canary").cohort == "canary"
    fleet.set_schedule(device.device_id, 60)
    fleet.revoke(device.device_id)
    kept = fleet.device(device.device_id)
    assert (kept.cohort, kept.report_interval, kept.revoked) == ("canary", 60.0, True)
    with pytest.raises(BadRollout):
        fleet.set_cohort(device.device_id, "x" * 65)
    status = fleet.devices_path / device.device_id / "status.json"
    status.write_text(status.read_text().replace('"canary"', '"../etc"'))
    with pytest.raises(BadFleet, match="damaged"):
        fleet.device(device.device_id)


def test_evaluate_does_not_halt_a_rollout_resumed_while_it_counted(tmp_path: Path) -> None:
    # The tally is taken outside the lock: an operator's halt and resume in between opens a
    # new window with no failures in it, and the old window's count must not halt it again.
    now = [5000.0]
    book = RolloutBook(tmp_path, clock=lambda: now[0])
    made = book.start("app", "1.1.0", "app.tar", percent=100, min_reports=2, halt_at=0.5)
    records = [UpdateRecord(i, "reverted", None, 6000) for i in IDS[:2]]

    class _RacingStore(_Store):
        def update_records(self, component: str, version: str) -> list[UpdateRecord]:
            other = RolloutBook(tmp_path, clock=lambda: 7000.0)
            other.halt(made.rollout_id, "operator")
            other.resume(made.rollout_id)  # window from 7000: both failures are older
            return self.records

    facts = _Facts(dict.fromkeys(IDS), set())
    assert book.evaluate(_RacingStore(records), facts) == []  # type: ignore[arg-type]
    assert not book.get(made.rollout_id).halted
    assert book.get(made.rollout_id).window_from == 7000
