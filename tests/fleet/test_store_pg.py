"""PostgreSQL only: two servers racing for one device (threads and processes).

The rest of the store suite runs on PostgreSQL too (``make_store`` in test_store*.py).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.stores import new_url, sql
from tinyward.fleet.store_pg import PostgresStore
from tinyward.trust.report import Report

A = "aa" * 32
BOUND = 60.0  # seconds any wait below may take, never more


def _r(seq: int) -> tuple[Report, bytes]:
    return Report(A, seq, 1000 + seq), b"signed-%d" % seq


@pytest.fixture
def pg_url(tmp_path: Path, pg_server: Any) -> str:
    return new_url("postgresql", tmp_path, pg_server)


def _race(url: str, *, unsafe: bool) -> PostgresStore:
    """Server one reads the device's last seq (0) and, before it writes [1, 2], server two
    stores [3]. With the per-device lock, two waits for one; without, both go ahead."""
    one = PostgresStore(url, unsafe_no_device_lock=unsafe)
    two = PostgresStore(url, unsafe_no_device_lock=unsafe)
    second = threading.Thread(target=two.append, args=(A, [_r(3)], 6), daemon=True)

    def between() -> None:
        second.start()
        if unsafe:
            second.join(BOUND)  # nothing stops it: it commits while one is mid-transaction
            return
        deadline = time.monotonic() + BOUND  # until two is seen waiting for one's lock
        while not sql(two, "SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                           " AND NOT granted") and time.monotonic() < deadline:
            time.sleep(0.01)

    one._between_read_and_write = between
    one.append(A, [_r(1), _r(2)], 5)
    second.join(BOUND)
    assert not second.is_alive()
    two.close()
    return one


def test_attack_racing_servers_store_below_the_last_seq_without_the_device_lock(
        pg_url: str) -> None:
    store = _race(pg_url, unsafe=True)
    # Reports 1 and 2 were stored after 3 had been (the rule says: skip them), and the
    # device's last seq went back to 2, so a replay of 3 would now be taken for new.
    assert store.last_seq(A) == 2
    assert sql(store, "SELECT MAX(seq) FROM reports") == [(3,)]
    store.close()


def test_racing_servers_serialise_on_the_device_lock(pg_url: str) -> None:
    store = _race(pg_url, unsafe=False)
    assert store.last_seq(A) == 3 == store.count_reports(A)  # one first, then two
    assert sql(store, "SELECT seq FROM reports ORDER BY seq") == [(1,), (2,), (3,)]
    store.close()


def _server_process(url: str, offset: int, rounds: int) -> None:
    """A server's store: overlapping batches for two devices, as devices that resend."""
    store = PostgresStore(url)
    devices = (A, "bb" * 32)
    try:
        for start in range(1 + offset, rounds + 1, 3):
            groups = [(device, [(Report(device, seq, 1000 + seq, incidents={"scan": 1}),
                                 b"s%d" % seq) for seq in range(start, start + 6)])
                      for device in (devices if start % 2 else devices[::-1])]
            store.append_many(groups, received_at=start)
    finally:
        store.close()


def test_two_server_processes_racing_for_the_same_devices_store_each_report_once(
        pg_url: str) -> None:
    rounds = 120
    context = multiprocessing.get_context("spawn")
    servers = [context.Process(target=_server_process, args=(pg_url, offset, rounds))
               for offset in (0, 1)]
    for server in servers:
        server.start()
    for server in servers:
        server.join(BOUND * 2)
    assert [server.exitcode for server in servers] == [0, 0]  # no deadlock, no error
    store = PostgresStore(pg_url)
    for device in (A, "bb" * 32):
        rows = sql(store, "SELECT seq FROM reports WHERE device_id = ?", (device,))
        seqs = [row[0] for row in rows]
        assert len(seqs) == len(set(seqs))  # never twice
        status = store.device_status(device)
        assert status is not None and status.last_seq == max(seqs)
        assert status.reports == len(seqs) == store.count_reports(device)
        assert status.incidents == {"scan": len(seqs)}  # counted once per stored report
        # Each server's batches overlap by half and go up: all but gaps below a batch
        # the other server stored first are kept, and nothing above the last is lost.
        assert max(seqs) >= rounds
    store.close()


def test_a_database_restart_costs_no_failed_commit(pg_url: str, pg_server: Any) -> None:
    if getattr(pg_server, "cluster", None) is None:
        pytest.skip("needs the session's own cluster (TINYWARD_TEST_PG names another server)")
    store = PostgresStore(pg_url + "&pool_size=2")
    try:
        assert store.append(A, [_r(1)], 5) == 1
        pg_server.cluster.restart()  # every pooled connection is now dead
        assert store.append(A, [_r(2)], 6) == 2  # checked, replaced, committed
        assert store.last_seq(A) == 2 and store.count_reports(A) == 2
    finally:
        store.close()


def test_nodes_starting_together_migrate_once(pg_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tinyward.fleet.store_pg import _PG_MIGRATIONS

    with ThreadPoolExecutor(4) as pool:  # four server nodes opening a new database at once
        stores = list(pool.map(lambda _: PostgresStore(pg_url), range(4)))
    assert sql(stores[0], "SELECT version FROM schema_version ORDER BY version") == [
        (n,) for n in range(1, len(_PG_MIGRATIONS) + 1)]
    for store in stores:
        store.close()
