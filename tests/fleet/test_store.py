"""The SQLite report store: durable settings, idempotent appends, status queries, URLs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tinyward.fleet.store import BadDatabaseUrl, SQLiteStore, open_store
from tinyward.trust.report import Report

A, B = "aa" * 32, "bb" * 32


def _r(device: str, seq: int, **kw: object) -> tuple[Report, bytes]:
    return Report(device, seq, 1000 + seq, **kw), b"signed-%d" % seq  # type: ignore[arg-type]


def test_wal_and_full_sync(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_append_returns_highest_and_is_durable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    assert store.last_seq(A) == 0
    assert store.append(A, [_r(A, 1), _r(A, 2, incidents={"scan": 3})], received_at=5) == 2
    store.close()
    # A fresh connection (another process would see the same) finds both rows.
    reopened = sqlite3.connect(tmp_path / "f.db")
    assert reopened.execute("SELECT COUNT(*) FROM reports").fetchone()[0] == 2


def test_append_skips_replays_and_duplicates(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    store.append(A, [_r(A, 1), _r(A, 2)], received_at=5)
    assert store.append(A, [_r(A, 2), _r(A, 1)], received_at=6) == 2
    assert store.count_reports(A) == 2
    assert store.append(A, [_r(A, 2), _r(A, 3)], received_at=6) == 3
    assert store.count_reports(A) == 3


def test_append_refuses_other_device_and_rolls_back(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    with pytest.raises(ValueError):
        store.append(A, [_r(A, 1), _r(B, 2)], received_at=5)
    assert store.last_seq(A) == 0 and store.count_reports(A) == 0


def test_status_queries(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    store.append(A, [_r(A, 1, incidents={"scan": 2}), _r(A, 2, incidents={"scan": 1})], 7)
    store.append(B, [_r(B, 1, health="degraded", incidents={"flood": 4})], 8)
    status = store.device_status(A)
    assert status is not None
    assert (status.last_seq, status.reports, status.incidents) == (2, 2, {"scan": 3})
    assert store.device_status("cc" * 32) is None
    assert [d.device_id for d in store.devices()] == [A, B]
    fleet = store.fleet_status()
    assert (fleet.devices, fleet.reports, fleet.degraded_devices) == (2, 3, 1)
    assert fleet.incidents == {"flood": 4, "scan": 3}


def test_two_connections_never_store_twice(tmp_path: Path) -> None:
    one, two = SQLiteStore(tmp_path / "f.db"), SQLiteStore(tmp_path / "f.db")
    one.append(A, [_r(A, 1)], 1)
    assert two.append(A, [_r(A, 1), _r(A, 2)], 2) == 2
    assert one.count_reports(A) == 2


def test_url_parsing(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/x.db")  # absolute: sqlite:////tmp/...
    assert isinstance(store, SQLiteStore) and store.path == tmp_path / "x.db"


@pytest.mark.parametrize("url", ["postgresql://h/db", "sqlite://host/x.db", "sqlite:///",
                                 "sqlite:///x.db?mode=ro", "sqlite:////no/such/dir/x.db"])
def test_bad_urls_refused(url: str) -> None:
    with pytest.raises(BadDatabaseUrl):
        open_store(url)


def test_append_many_is_one_transaction(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    assert store.append_many([(A, [_r(A, 1)]), (B, [_r(B, 1), _r(B, 2)])], 3) == [1, 2]
    with pytest.raises(ValueError):
        store.append_many([(A, [_r(A, 2)]), (B, [_r(A, 3)])], 4)
    assert store.last_seq(A) == 1  # the good first group was rolled back with the bad one
