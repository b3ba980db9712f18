"""The report stores (SQLite, PostgreSQL): durable settings, idempotent appends, status
queries, URLs, migrations. Tests taking ``make_store`` run once per backend
(tests/fleet/stores.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fleet.stores import sql, wipe
from tinyward.fleet.store import (
    MIN_PACKED_RUN,
    BadDatabaseUrl,
    SQLiteStore,
    open_store,
    pack_signed,
    unpack_signed,
)
from tinyward.lab.simdevice import KeySigner
from tinyward.trust.report import Report, encode_report, verify_report

A, B = "aa" * 32, "bb" * 32
MakeStore = Callable[..., Any]


def _r(device: str, seq: int, **kw: object) -> tuple[Report, bytes]:
    return Report(device, seq, 1000 + seq, **kw), b"signed-%d" % seq  # type: ignore[arg-type]


def test_wal_and_full_sync(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_append_returns_highest_and_is_durable(make_store: MakeStore) -> None:
    store = make_store()
    assert store.last_seq(A) == 0
    assert store.append(A, [_r(A, 1), _r(A, 2, incidents={"scan": 3})], received_at=5) == 2
    store.close()
    # A fresh connection (another process would see the same) finds both rows.
    reopened = make_store()
    assert reopened.count_reports(A) == 2 and reopened.last_seq(A) == 2


def test_append_skips_replays_and_duplicates(make_store: MakeStore) -> None:
    store = make_store()
    store.append(A, [_r(A, 1), _r(A, 2)], received_at=5)
    assert store.append(A, [_r(A, 2), _r(A, 1)], received_at=6) == 2
    assert store.count_reports(A) == 2
    assert store.append(A, [_r(A, 2), _r(A, 3)], received_at=6) == 3
    assert store.count_reports(A) == 3


def test_append_refuses_other_device_and_rolls_back(make_store: MakeStore) -> None:
    store = make_store()
    with pytest.raises(ValueError):
        store.append(A, [_r(A, 1), _r(B, 2)], received_at=5)
    assert store.last_seq(A) == 0 and store.count_reports(A) == 0


def test_status_queries(make_store: MakeStore) -> None:
    store = make_store()
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


def test_two_connections_never_store_twice(make_store: MakeStore) -> None:
    one, two = make_store(), make_store()
    one.append(A, [_r(A, 1)], 1)
    assert two.append(A, [_r(A, 1), _r(A, 2)], 2) == 2
    assert one.count_reports(A) == 2


def test_url_parsing(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/x.db")  # absolute: sqlite:////tmp/...
    assert isinstance(store, SQLiteStore) and store.path == tmp_path / "x.db"


@pytest.mark.parametrize("url", ["mysql://h/db", "sqlite://host/x.db", "sqlite:///",
                                 "sqlite:///x.db?mode=ro", "sqlite:////no/such/dir/x.db",
                                 "postgresql://host:5432", "postgresql://h/db?pool_size=0",
                                 "postgres://h/db?pool_size=x"])
def test_bad_urls_refused(url: str) -> None:
    with pytest.raises(BadDatabaseUrl):
        open_store(url)


def test_append_many_is_one_transaction(make_store: MakeStore) -> None:
    store = make_store()
    assert store.append_many([(A, [_r(A, 1)]), (B, [_r(B, 1), _r(B, 2)])], 3) == [1, 2]
    with pytest.raises(ValueError):
        store.append_many([(A, [_r(A, 2)]), (B, [_r(A, 3)])], 4)
    assert store.last_seq(A) == 1  # the good first group was rolled back with the bad one


# --- the signed bytes, kept without their zero padding ------------------------------------

@given(st.binary(max_size=300), st.integers(0, 2000), st.binary(max_size=300))
def test_packing_the_signed_bytes_loses_nothing(before: bytes, zeros: int, after: bytes) -> None:
    signed = before + bytes(zeros) + after
    packed, at, length = pack_signed(signed)
    assert unpack_signed(packed, at, length) == signed
    assert len(packed) + length == len(signed)
    if zeros >= MIN_PACKED_RUN:
        assert length >= zeros and len(packed) <= len(signed) - zeros


def test_a_real_report_is_stored_small_and_given_back_exactly(make_store: MakeStore) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    device = "cd" * 32
    reports = [Report(device, seq, 1000 + seq, results=({"label": "quiet", "score": 0.5},))
               for seq in (1, 2)]
    signed = [encode_report(r, KeySigner(key)) for r in reports]
    store = make_store()
    store.append(device, list(zip(reports, signed, strict=True)), received_at=5)
    for report, message in zip(reports, signed, strict=True):
        again = store.signed_report(device, report.seq)
        assert again == message
        assert verify_report(again, key.public_key()) == report
    assert store.signed_report(device, 3) is None
    stored = sql(store, "SELECT MAX(LENGTH(signed_packed)) FROM reports")[0][0]
    assert stored < len(signed[0]) // 3  # a quiet report is mostly padding
    # The view gives auditors the exact bytes in plain SQL.
    view = sql(store, "SELECT signed FROM signed_reports ORDER BY seq")
    assert [bytes(row[0]) for row in view] == signed


def test_a_database_from_before_packing_is_migrated_and_keeps_its_reports(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "f.db")
    old.execute(
        "CREATE TABLE reports (device_id TEXT NOT NULL, seq BIGINT NOT NULL,"
        " report_time BIGINT NOT NULL, received_at BIGINT NOT NULL, mode TEXT NOT NULL,"
        " health TEXT NOT NULL, results TEXT NOT NULL, incidents TEXT NOT NULL,"
        " signed BLOB NOT NULL, PRIMARY KEY (device_id, seq))")
    whole = b"old" + bytes(500) + b"message"
    old.execute("INSERT INTO reports VALUES (?, 1, 1001, 5, 'connected', 'ok', '[]', '{}', ?)",
                (A, whole))
    old.commit()
    old.close()
    store = SQLiteStore(tmp_path / "f.db")
    assert store.signed_report(A, 1) == whole
    store.append(A, [(Report(A, 2, 1002), b"new" + bytes(500) + b"message")], received_at=6)
    assert store.signed_report(A, 2) == b"new" + bytes(500) + b"message"
    assert [bytes(r[0]) for r in store._db.execute(
        "SELECT signed FROM signed_reports ORDER BY seq")] == [
        whole, b"new" + bytes(500) + b"message"]
    store.close()
    assert SQLiteStore(tmp_path / "f.db").signed_report(A, 1) == whole  # opens again as is


# --- one commit, many devices: the multi-row statements agree with a plain model -----------

@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # wiped per example
@given(st.lists(st.tuples(st.sampled_from(["a1" * 32, "b2" * 32, "c3" * 32]),
                          st.lists(st.tuples(st.integers(1, 200),
                                             st.sampled_from([{}, {"scan": 1}, {"flood": 2}])),
                                   max_size=120)),
                min_size=1, max_size=8))
def test_append_many_matches_a_model_of_the_rules(make_store: MakeStore, groups: list) -> None:
    store = make_store()
    wipe(store)
    model_last: dict[str, int] = {}
    model_rows: set[tuple[str, int]] = set()
    model_incidents: dict[tuple[str, str], int] = {}
    expected = []
    batch = []
    for device, items in groups:
        reports = [(Report(device, seq, 1000 + seq, incidents=inc), b"s%d" % seq + bytes(70))
                   for seq, inc in items]
        batch.append((device, reports))
        last = model_last.get(device, 0)
        for report, _ in reports:
            if report.seq > last:
                last = report.seq
                model_rows.add((device, report.seq))
                for kind, count in report.incidents.items():
                    model_incidents[device, kind] = (
                        model_incidents.get((device, kind), 0) + count
                    )
        model_last[device] = last
        expected.append(last)
    assert store.append_many(batch, received_at=5) == expected
    # The same groups again: nothing more is stored, each answer is the device's last.
    assert store.append_many(batch, received_at=6) == [model_last[d] for d, _ in groups]
    rows = {tuple(row) for row in sql(store, "SELECT device_id, seq FROM reports")}
    assert rows == model_rows
    for device, last in model_last.items():
        status = store.device_status(device)
        counted = sum(1 for d, _ in model_rows if d == device)
        if counted:
            assert status is not None and (status.last_seq, status.reports) == (last, counted)
            assert status.incidents == {k: v for (d, k), v in model_incidents.items()
                                        if d == device}
        for seq in (s for d, s in model_rows if d == device):
            assert store.signed_report(device, seq) == b"s%d" % seq + bytes(70)
    store.close()


def test_a_big_commit_fits_the_variable_limit_of_older_sqlite(make_store: MakeStore) -> None:
    # 200 devices, each with 32 incident kinds of its own choosing: every statement must
    # stay under the 999 variables older SQLite builds allow (a device picks its kinds, so
    # one device must not be able to make a whole group commit fail).
    store = make_store()
    if isinstance(store, SQLiteStore):
        store._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    kinds = {f"kind{k}": 1 for k in range(32)}
    devices = [f"{n:064x}" for n in range(200)]
    groups = [(device, [(Report(device, seq, 1000 + seq, incidents=kinds), b"x" * 100)
                        for seq in (1, 2, 3)]) for device in devices]
    assert store.append_many(groups, received_at=5) == [3] * 200
    assert store.fleet_status().reports == 600
    status = store.device_status(devices[-1])
    assert status is not None and status.incidents == {kind: 3 for kind in kinds}


def test_acked_means_durable_on_both_backends(make_store: MakeStore, store_backend: str) -> None:
    store = make_store()
    if store_backend == "sqlite":
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    else:  # every pooled connection commits with the WAL flushed first
        assert sql(store, "SHOW synchronous_commit") == [("on",)]
        assert sql(store, "SHOW fsync") == [("on",)]


# --- schema migrations --------------------------------------------------------------------

def test_a_new_database_records_its_schema_version(make_store: MakeStore) -> None:
    from tinyward.fleet.store import _SQLITE_MIGRATIONS

    store = make_store()
    assert sql(store, "SELECT version FROM schema_version ORDER BY version") == [
        (n,) for n in range(1, len(_SQLITE_MIGRATIONS) + 1)]
    store.close()
    assert make_store().last_seq(A) == 0  # opening again applies nothing, fails nothing
    assert len(sql(make_store(), "SELECT * FROM schema_version")) == len(_SQLITE_MIGRATIONS)


def test_a_database_from_a_newer_tinyward_is_refused(make_store: MakeStore) -> None:
    from tinyward.fleet.store import SchemaTooNew

    store = make_store()
    sql(store, "INSERT INTO schema_version (version, applied_at) VALUES (999, 0)")
    store.close()
    with pytest.raises(SchemaTooNew, match="999"):
        make_store()


def test_a_database_at_the_first_schema_version_is_migrated_and_keeps_its_rows(
        store_backend: str, store_url: str, make_store: MakeStore) -> None:
    # Made by hand at version 1 (only the first migration, and a device row in it), as
    # an older tinyward left it; then opened by this one.
    if store_backend == "sqlite":
        from tinyward.fleet.store import _SQLITE_MIGRATIONS, SCHEMA_VERSION_TABLE

        path = store_url.removeprefix("sqlite:///")
        old = sqlite3.connect(path, isolation_level=None)
        _SQLITE_MIGRATIONS[0](old.execute)
        old.execute(SCHEMA_VERSION_TABLE)
        old.execute("INSERT INTO schema_version VALUES (1, 0)")
        old.execute("INSERT INTO devices (device_id, last_seq, reports, last_report_time,"
                    " last_received_at, health) VALUES (?, 7, 7, 1007, 5, 'ok')", (A,))
        old.close()
        latest = len(_SQLITE_MIGRATIONS)
    else:
        import psycopg

        from tinyward.fleet.store import SCHEMA_VERSION_TABLE
        from tinyward.fleet.store_pg import _PG_MIGRATIONS, parse_url

        with psycopg.connect(parse_url(store_url)[0]) as old:
            _PG_MIGRATIONS[0](old.execute)
            old.execute(SCHEMA_VERSION_TABLE)
            old.execute("INSERT INTO schema_version VALUES (1, 0)")
            old.execute("INSERT INTO devices (device_id, last_seq, reports, last_report_time,"
                        " last_received_at, health) VALUES (%s, 7, 7, 1007, 5, 'ok')", (A,))
        latest = len(_PG_MIGRATIONS)
    store = make_store()
    assert sql(store, "SELECT MAX(version) FROM schema_version") == [(latest,)]
    status = store.device_status(A)
    assert status is not None and (status.last_seq, status.reports) == (7, 7)
    assert store.append(A, [_r(A, 7), _r(A, 8)], received_at=9) == 8
    assert store.count_reports(A) == 1


# --- PostgreSQL: URLs, an unreachable server, racing servers -------------------------------

def test_postgresql_url_options_and_password_never_shown() -> None:
    from tinyward.fleet.store_pg import DatabaseUnavailable, parse_url

    assert parse_url("postgresql://u@h:5433/fleet?pool_size=9&sslmode=require") == (
        "postgresql://u@h:5433/fleet?sslmode=require", 9)
    assert parse_url("postgres://u@h/fleet")[1] == 4
    with pytest.raises(BadDatabaseUrl) as bad:
        parse_url("postgresql://u:sekrit-pw@h/fleet?pool_size=0")
    assert "sekrit-pw" not in str(bad.value) and "***" in str(bad.value)
    # No server at that socket: a clear error at once, without the password.
    with pytest.raises(DatabaseUnavailable) as down:
        open_store("postgresql://u:sekrit-pw@/fleet?host=/nonexistent-tinyward-dir")
    assert "sekrit-pw" not in str(down.value)


def test_attack_incident_kind_flood_is_capped_on_every_backend(make_store: MakeStore) -> None:
    # A device naming 32 fresh kinds in each report (256 in all) keeps at most
    # max_incident_kinds rows; the rest is counted under "other", nothing is lost.
    from tinyward.fleet.store import OTHER_KIND

    store = make_store(max_incident_kinds=16)
    for seq in range(1, 9):
        store.append_many([(A, [_r(A, seq, incidents={f"k{seq}x{i:02d}": 1 for i in range(32)})]),
                           (B, [_r(B, seq, incidents={"scan": 1})])], received_at=seq)
    status = store.device_status(A)
    assert status is not None and len(status.incidents) == 16
    assert sum(status.incidents.values()) == 8 * 32
    assert status.incidents[OTHER_KIND] == 8 * 32 - 15
    assert store.device_status(B).incidents == {"scan": 8}  # type: ignore[union-attr]
    assert sql(store, "SELECT COUNT(*) FROM incidents WHERE device_id = ?", (A,)) == [(16,)]


def test_stored_reports_newest_first(make_store: MakeStore) -> None:
    store = make_store()
    store.append(A, [_r(A, 1), _r(A, 2, incidents={"scan": 1})], received_at=10)
    store.append(B, [_r(B, 1, results=({"label": "quiet", "score": 0.5},))], received_at=20)
    assert [(r.device_id, r.seq) for r in store.reports()] == [(B, 1), (A, 2), (A, 1)]
    assert [r.seq for r in store.reports(A)] == [2, 1]
    assert [(r.device_id, r.seq) for r in store.reports(since=15)] == [(B, 1)]
    assert [r.seq for r in store.reports(A, limit=1)] == [2]
    newest_a = store.reports(A)[0]
    assert (newest_a.incidents, newest_a.received_at, newest_a.report_time) == (
        {"scan": 1}, 10, 1002)
    assert store.reports(B)[0].results == [{"label": "quiet", "score": 0.5}]
