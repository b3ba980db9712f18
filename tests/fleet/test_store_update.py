"""The store keeps each device's update state and installed versions, and its failures
(both backends, through ``make_store``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinyward.fleet.store import DeviceUpdate, SQLiteStore, UpdateRecord
from tinyward.trust.report import Report, UpdateStatus

A, B = "aa" * 32, "bb" * 32


def _r(device: str, seq: int, update: UpdateStatus | None = None) -> tuple[Report, bytes]:
    return Report(device, seq, 1000 + seq, update=update), b"signed-%d" % seq


def test_the_latest_update_state_is_kept_and_a_report_without_one_keeps_it(
        make_store: Callable[..., Any]) -> None:
    store = make_store()
    store.append(A, [_r(A, 1, UpdateStatus("trial", {"app": "1.1.0"}, None, ("app", "1.1.0"))),
                     _r(A, 2, UpdateStatus("accepted", {"app": "1.1.0", "model": "2.0.0"}))],
                 received_at=5)
    assert store.device_status(A).update == DeviceUpdate(  # type: ignore[union-attr]
        "accepted", {"app": "1.1.0", "model": "2.0.0"}, None, None, 2)
    store.append(A, [_r(A, 3)], received_at=6)  # an older agent, or none: nothing is lost
    status = store.device_status(A)
    assert status is not None and status.last_seq == 3 and status.update is not None
    assert status.update.seq == 2
    store.append(A, [_r(A, 4, UpdateStatus("reverted", {"app": "1.1.0"}, "crash",
                                           ("app", "1.2.0"))), _r(A, 5)], received_at=7)
    assert store.device_status(A).update == DeviceUpdate(  # type: ignore[union-attr]
        "reverted", {"app": "1.1.0"}, "crash", ("app", "1.2.0"), 4)
    assert store.devices()[0].update == store.device_status(A).update  # type: ignore[union-attr]
    store.append(B, [_r(B, 1)], received_at=7)
    assert store.device_status(B).update is None  # type: ignore[union-attr]


def test_failures_are_kept_per_target_for_the_rollouts(make_store: Callable[..., Any]) -> None:
    store = make_store()
    store.append(A, [_r(A, 1, UpdateStatus("reverted", {"app": "1.0.0"}, "crash",
                                           ("app", "1.1.0"))),
                     _r(A, 2, UpdateStatus("idle", {"app": "1.0.0"}))], received_at=50)
    store.append(B, [_r(B, 1, UpdateStatus("failed", {"app": "1.0.0"}, "x", ("model", "9.0.0")))],
                 received_at=60)
    assert store.update_records("app", "1.1.0") == [
        UpdateRecord(A, "idle", "1.0.0", 50),  # failed, then back to idle: kept
        UpdateRecord(B, "failed", "1.0.0", None),  # failed another target
    ]
    # A failure that names no target counts for whichever target the tally asks about.
    store.append(B, [_r(B, 2, UpdateStatus("failed", {"app": "1.0.0"}))], received_at=70)
    assert store.update_records("app", "1.1.0")[1].failed_at == 70


def test_a_database_from_before_update_states_is_migrated(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "f.db")
    old.execute(
        "CREATE TABLE devices (device_id TEXT PRIMARY KEY, last_seq BIGINT NOT NULL,"
        " reports BIGINT NOT NULL, last_report_time BIGINT NOT NULL,"
        " last_received_at BIGINT NOT NULL, health TEXT NOT NULL)")
    old.execute("INSERT INTO devices VALUES (?, 7, 7, 1007, 5, 'ok')", (A,))
    old.commit()
    old.close()
    store = SQLiteStore(tmp_path / "f.db")
    status = store.device_status(A)
    assert status is not None and status.last_seq == 7 and status.update is None
    store.append(A, [_r(A, 8, UpdateStatus("idle", {"config": "3.0.0"}))], received_at=9)
    assert store.device_status(A).update.versions == {"config": "3.0.0"}  # type: ignore[union-attr]
    store.close()
    again = SQLiteStore(tmp_path / "f.db")  # opens again as is
    assert again.device_status(A).reports == 8  # type: ignore[union-attr]
