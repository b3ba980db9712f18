"""Incidents as events: one row per reported kind, exactly once; fleet-raised ones; the cap.

Every test runs on SQLite and PostgreSQL (``make_store``: tests/fleet/stores.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.fleet.stores import sql
from tinyward.fleet.store import OTHER_KIND
from tinyward.trust.report import Report

A, B = "aa" * 32, "bb" * 32


def _r(device: str, seq: int, **kw: object) -> tuple[Report, bytes]:
    return Report(device, seq, 1000 + seq, **kw), b"signed-%d" % seq  # type: ignore[arg-type]


def test_each_reported_kind_is_one_event_with_its_report(make_store: Callable[..., Any]) -> None:
    store = make_store()
    store.append(A, [_r(A, 1), _r(A, 2, incidents={"net.anomaly": 3, "net.novel": 1})],
                 received_at=50)
    events = store.incidents(A)
    assert sorted((e.kind, e.count, e.seq, e.at, e.device_time) for e in events) == [
        ("net.anomaly", 3, 2, 50, 1002), ("net.novel", 1, 2, 50, 1002)]
    assert all(e.evidence == "report seq 2" for e in events)
    assert store.device_status(A).incidents == {"net.anomaly": 3, "net.novel": 1}


def test_attack_replayed_report_adds_no_incident_event(make_store: Callable[..., Any]) -> None:
    store = make_store()
    report = _r(A, 1, incidents={"net.anomaly": 1})
    store.append(A, [report], received_at=5)
    store.append(A, [report], received_at=6)
    store.append_many([(A, [report]), (A, [report])], received_at=7)
    assert len(store.incidents(A)) == 1
    assert store.device_status(A).incidents == {"net.anomaly": 1}


def test_zero_counts_make_no_event(make_store: Callable[..., Any]) -> None:
    store = make_store()
    store.append(A, [_r(A, 1, incidents={"net.anomaly": 0})], received_at=5)
    assert store.incidents(A) == []


def test_fleet_raised_incident_is_recorded_and_counted(make_store: Callable[..., Any]) -> None:
    store = make_store()
    made = store.add_incident(B, "quiet", at=100, evidence="no report for 95 s")
    assert made.seq is None and made.device_time is None and made.count == 1
    assert store.incidents(B) == [made]
    assert store.device_status(B) is None  # an incident is not a report
    store.append(B, [_r(B, 1)], received_at=200)
    assert store.device_status(B).incidents == {"quiet": 1}
    with pytest.raises(ValueError):
        store.add_incident(B, "quiet", at=100, evidence="x", count=0)


def test_filters_and_order_newest_first(make_store: Callable[..., Any]) -> None:
    store = make_store()
    store.append(A, [_r(A, 1, incidents={"k1": 1})], received_at=10)
    store.append(B, [_r(B, 1, incidents={"k2": 1})], received_at=20)
    store.add_incident(A, "quiet", at=30, evidence="silent")
    assert [e.kind for e in store.incidents()] == ["quiet", "k2", "k1"]
    assert [e.kind for e in store.incidents(A)] == ["quiet", "k1"]
    assert [e.kind for e in store.incidents(since=15)] == ["quiet", "k2"]
    assert [e.kind for e in store.incidents(kind="k2")] == ["k2"]
    assert [e.kind for e in store.incidents(limit=1)] == ["quiet"]
    assert store.incidents(limit=-5) == []


def test_attack_many_kinds_fold_into_other_in_events_too(make_store: Callable[..., Any]) -> None:
    store = make_store(max_incident_kinds=3)
    store.append(A, [_r(A, 1, incidents={"a": 1, "b": 1, "c": 1, "d": 1})], received_at=5)
    kinds = sorted(e.kind for e in store.incidents(A))
    assert kinds == ["a", "b", OTHER_KIND, OTHER_KIND]
    assert store.device_status(A).incidents == {"a": 1, "b": 1, OTHER_KIND: 2}
    store.add_incident(A, "quiet", at=6, evidence="silent")
    assert store.incidents(A)[0].kind == OTHER_KIND


def test_events_table_added_to_an_older_database(make_store: Callable[..., Any]) -> None:
    store = make_store()
    # A database at schema version 1, as tinyward left it before incident events.
    sql(store, "DROP TABLE incident_events")
    sql(store, "DELETE FROM schema_version WHERE version >= 2")
    store.close()
    reopened = make_store()
    reopened.append(A, [_r(A, 1, incidents={"k": 2})], received_at=5)
    assert [e.count for e in reopened.incidents(A)] == [2]
