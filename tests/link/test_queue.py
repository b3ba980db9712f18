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
        queue.put(r.seq, b"report-%d" % r.seq)
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
    assert (r.seq, r.dropped_reports) == (5, 1)
    queue.put(r.seq, b"report-5")
    _enqueue(queue, 2)
    assert [s for s, _ in queue.pending()] == [4, 5, 6, 7]
    reopened = ReportQueue(_storage(tmp_path), QueueConfig(capacity=4))
    assert reopened.dropped == 3
    assert reopened.reserve().dropped_reports == 4


def test_no_report_is_lost_without_being_counted(tmp_path: Path) -> None:
    """Every number made is either acknowledged, still queued, or counted as dropped."""
    queue = ReportQueue(_storage(tmp_path), QueueConfig(capacity=5))
    made = _enqueue(queue, 23)
    queue.acknowledge(made[-3])
    assert queue.dropped + len(queue) + (queue.acked - queue.dropped) == len(made)
    assert [s for s, _ in queue.pending()] == made[-2:]


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
