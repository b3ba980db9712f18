"""The fleet server over each store backend (SQLite, PostgreSQL): reports, replays, a
batch judged report by report, incidents, and the admin views, through real mutual TLS.

(tests/fleet/test_crash.py runs ``fleet serve --db …`` on both, with SIGKILLs.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from tinyward.fleet.server import ServerConfig

from .serverkit import Running, start_running


@pytest.fixture
def running(tmp_path: Path, store_url: str) -> Iterator[Running]:
    state = start_running(tmp_path, ("a", "b"), ServerConfig(rate_per_second=1000, burst=1000),
                          store_url=store_url)
    yield state
    state.server.stop()
    state.store.close()


def test_reports_replays_batches_and_admin_views(running: Running) -> None:
    a, b = running.devices["a"].device_id, running.devices["b"].device_id
    first = running.report("a", incidents={"net.anomaly": 2})
    assert running.post("a", first) == (200, {"stored_seq": 1})
    status, body = running.post("a", first)  # a replay: refused, its answer says where
    assert (status, body["stored_seq"]) == (409, 1)
    reports = [running.report("b") for _ in range(3)]
    status, body = running.post("b", cbor2.dumps([reports[0], reports[1], reports[0],
                                                  reports[2]]),
                                content_type="application/cbor", path="/v1/reports/batch")
    assert status == 200 and body["stored_seq"] == 3
    assert [r["code"] for r in body["results"]] == ["stored", "stored", "replay", "stored"]
    assert running.store.last_seq(b) == 3
    auth = {"Authorization": f"Bearer {running.admin_token}"}
    status, one = running.request("GET", f"/v1/devices/{a}", headers=auth)
    assert status == 200 and one["last_seq"] == 1 and one["incidents"] == {"net.anomaly": 2}
    status, fleet = running.request("GET", "/v1/fleet", headers=auth)
    assert status == 200 and fleet["reports"] == 4
    assert [(e.kind, e.seq) for e in running.store.incidents(a)] == [("net.anomaly", 1)]
