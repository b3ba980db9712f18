"""The store-and-forward queue: persistence, crash safety, acknowledgement, counted drops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tinyward.errors import Misuse
from tinyward.link.errors import QueueDamaged
from tinyward.link.queue import META_RECORD, QueueConfig, ReportQueue
from tinyward.trust.errors import RecordRolledBack
from tinyward.trust.rot import FileRootOfTrust
from tinyward.trust.storage import ProtectedStorage


def _storage(tmp_path: Path) -> ProtectedStorage:
    key = tmp_path / "root.key"
    root = (FileRootOfTrust(key, tmp_path / "counters") if key.exists()
            else FileRootOfTrust.create(key, tmp_path / "counters"))
    return ProtectedStorage(tmp_path / "storage", root)


def _enqueue(queue: ReportQueue, n: int) -> list[int]:
    seqs = []
    for _ in range(n):
        r = queue.reserve()
        queue.put(r.seq, b"report-%d" % r.seq, r.dropped_reports)
        seqs.append(r.seq)
    return seqs


def test_reports_survive_a_restart_in_order(tmp_path: Path) -> None:
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=8))
    assert _enqueue(queue, 5) == [1, 2, 3, 4, 5]
    reopened = ReportQueue(_storage(tmp_path), QueueConfig(capacity=8))
    assert reopened.pending() == [(s, b"report-%d" % s) for s in range(1, 6)]


def test_only_acknowledged_reports_leave(tmp_path: Path) -> None:
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=8))
    _enqueue(queue, 5)
    assert queue.acknowledge(3) == 3
    assert queue.acknowledge(2) == 0
    reopened = ReportQueue(_storage(tmp_path), QueueConfig(capacity=8))
    assert [s for s, _ in reopened.pending()] == [4, 5] and reopened.acked == 3


def test_sequence_numbers_are_never_reused_after_a_crash_between_reserve_and_put(
        tmp_path: Path) -> None:
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=8))
    _enqueue(queue, 2)
    reserved = queue.reserve()  # then the device loses power before storing the report
    assert reserved.seq == 3
    reopened = ReportQueue(_storage(tmp_path), QueueConfig(capacity=8))
    assert reopened.reserve().seq == 4
    assert [s for s, _ in reopened.pending()] == [1, 2]


def test_a_crash_inside_a_write_leaves_the_old_or_new_queue(tmp_path: Path) -> None:
    """A temp file left by a write that never reached its rename changes nothing."""
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=8))
    _enqueue(queue, 3)
    (tmp_path / "storage" / f".{META_RECORD}.rec.abc.tmp").write_bytes(os.urandom(100))
    reopened = ReportQueue(_storage(tmp_path), QueueConfig(capacity=8))
    assert [s for s, _ in reopened.pending()] == [1, 2, 3]


def test_full_queue_drops_the_oldest_and_counts_every_drop(tmp_path: Path) -> None:
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=4))
    _enqueue(queue, 4)
    assert queue.dropped == 0
    r = queue.reserve()
    assert (r.seq, r.dropped_reports) == (5, 1)  # report 1 gave way, and report 5 says so
    queue.put(r.seq, b"report-5", r.dropped_reports)
    _enqueue(queue, 2)
    assert [s for s, _ in queue.pending()] == [4, 5, 6, 7]
    reopened = ReportQueue(_storage(tmp_path), QueueConfig(capacity=4))
    assert reopened.dropped == 3
    assert reopened.reserve().dropped_reports == 1  # report 4 gave way to report 8


def test_a_dropped_report_gives_back_the_drops_it_was_telling(tmp_path: Path) -> None:
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=2))
    _enqueue(queue, 4)  # 3 told the loss of 1, 4 told the loss of 2
    r = queue.reserve()  # 3 is lost, with its news of 1
    assert (r.seq, r.dropped_reports) == (5, 2)


def test_a_crash_after_reserve_gives_back_the_drops_that_report_would_have_told(
        tmp_path: Path) -> None:
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=2))
    _enqueue(queue, 2)
    assert queue.reserve().dropped_reports == 1  # then power is lost before put()
    reopened = ReportQueue(_storage(tmp_path), QueueConfig(capacity=2))
    # Report 1 is still in its slot and will be sent: neither lost nor owed.
    assert (reopened.owed, reopened.dropped) == (0, 0)
    assert [s for s, _ in reopened.pending()] == [1, 2]
    assert reopened.reserve().dropped_reports == 1  # now 1 really gives way to 4


def test_no_drop_goes_untold_under_random_outages_and_crashes(tmp_path: Path) -> None:
    """Every report made is stored by the server or counted, and every count is told once."""
    import random

    rng = random.Random(11)
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=6))
    server: dict[int, int] = {}  # seq -> drops the stored report told
    made = 0
    for _step in range(150):
        op = rng.random()
        if op < 0.6:
            r = queue.reserve()
            if rng.random() < 0.03:  # crash between reserve and put: a gap, not a report
                queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=6))
                continue
            queue.put(r.seq, b"r", r.dropped_reports)
            made += 1
        elif op < 0.85 and queue.oldest() is not None and rng.random() < 0.5:
            # The server is reachable for a moment: it stores a few, in order.
            for seq, _ in queue.pending()[: rng.randint(1, 3)]:
                server[seq] = queue._entries[seq][1]
                queue.acknowledge(seq)
        elif op < 0.9 and queue.oldest() is not None:
            queue.drop_oldest()
        else:
            queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=6))
    for seq, _ in queue.pending():
        server[seq] = queue._entries[seq][1]
        queue.acknowledge(seq)
    assert made == len(server) + queue.dropped
    assert sum(server.values()) + queue.owed == queue.dropped


def test_refused_report_is_dropped_and_counted(tmp_path: Path) -> None:
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=4))
    _enqueue(queue, 2)
    assert queue.drop_oldest() == 1 and queue.dropped == 1
    assert ReportQueue(_storage(tmp_path), QueueConfig(capacity=4)).pending()[0][0] == 2


def test_acknowledging_numbers_never_made_is_refused(tmp_path: Path) -> None:
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=4))
    _enqueue(queue, 2)
    with pytest.raises(QueueDamaged, match="only numbered up to 2"):
        queue.acknowledge(3)


def test_put_without_reserve_is_a_caller_bug(tmp_path: Path) -> None:
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=4))
    with pytest.raises(Misuse):
        queue.put(1, b"x")


def test_changing_capacity_of_a_queue_is_refused(tmp_path: Path) -> None:
    ReportQueue(_storage(tmp_path), QueueConfig(capacity=4))
    with pytest.raises(QueueDamaged, match="capacity"):
        ReportQueue(_storage(tmp_path), QueueConfig(capacity=8))


def test_rolled_back_queue_metadata_is_refused(tmp_path: Path) -> None:
    """Putting back an old copy of the metadata would resurrect sent numbers."""
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=4))
    meta = tmp_path / "storage" / f"{META_RECORD}.rec"
    old = meta.read_bytes()
    _enqueue(queue, 2)
    meta.write_bytes(old)
    with pytest.raises(RecordRolledBack):
        ReportQueue(_storage(tmp_path), QueueConfig(capacity=4))


def test_crash_recovery_is_committed_once(tmp_path: Path) -> None:
    """Recovering a crashed reservation, then any change, then reopening: undone once only
    (format 1 redid it on every open until the next reservation)."""
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=2))
    _enqueue(queue, 2)
    queue.reserve()  # displaces report 1; then power is lost before put()
    reopened = ReportQueue(_storage(tmp_path), QueueConfig(capacity=2))
    reopened.acknowledge(1)  # a change that writes the metadata without a reservation
    again = ReportQueue(_storage(tmp_path), QueueConfig(capacity=2))
    assert (again.dropped, again.owed, again.acked) == (0, 0, 1)
    assert [s for s, _ in again.pending()] == [2]


def test_offline_numbers_take_no_slot_and_displace_nothing(tmp_path: Path) -> None:
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=2))
    _enqueue(queue, 2)
    assert ReportQueue.reserve_offline(_storage(tmp_path)).seq == 3
    assert ReportQueue.reserve_offline(_storage(tmp_path)).seq == 4
    r = queue.reserve()  # the runner, whose view predates the offline numbers
    assert r.seq == 5 and r.dropped_reports == 1  # report 1's slot is needed: it gives way
    queue.put(r.seq, b"report-5", r.dropped_reports)
    reopened = ReportQueue(_storage(tmp_path), QueueConfig(capacity=2))
    assert [s for s, _ in reopened.pending()] == [2, 5] and reopened.dropped == 1


def test_an_offline_number_never_undoes_the_runners_open_reservation(tmp_path: Path) -> None:
    """A readout opening the queue while the runner signs between reserve and put."""
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=2))
    _enqueue(queue, 2)
    r = queue.reserve()  # displaces report 1, tells it
    offline = ReportQueue.reserve_offline(_storage(tmp_path))
    assert (offline.seq, offline.dropped_reports) == (4, 0)  # the drop is told once, by 3
    queue.put(r.seq, b"report-3", r.dropped_reports)
    reopened = ReportQueue(_storage(tmp_path), QueueConfig(capacity=2))
    assert [s for s, _ in reopened.pending()] == [2, 3]
    assert (reopened.dropped, reopened.owed) == (1, 0)


def test_put_of_a_number_not_reserved_for_the_queue_is_refused(tmp_path: Path) -> None:
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=4))
    seq = ReportQueue.reserve_offline(_storage(tmp_path)).seq
    with pytest.raises(Misuse):
        queue.put(seq, b"x")


def test_format_1_metadata_is_read_with_its_open_reservation(tmp_path: Path) -> None:
    import cbor2

    storage = _storage(tmp_path)
    queue = ReportQueue(storage, QueueConfig(capacity=2))
    _enqueue(queue, 2)
    # What format 1 wrote after reserving 3 (displacing 1), then a crash before put().
    storage.write(META_RECORD, cbor2.dumps({"v": 1, "capacity": 2, "next_seq": 4, "acked": 0,
                                            "dropped": 1, "reported": 1, "last_delta": 1}))
    reopened = ReportQueue(_storage(tmp_path), QueueConfig(capacity=2))
    assert (reopened.dropped, reopened.owed, reopened.next_seq) == (0, 0, 4)
    assert [s for s, _ in reopened.pending()] == [1, 2]
