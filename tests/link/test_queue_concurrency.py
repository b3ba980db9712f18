"""The report queue is atomic across processes (issue 12, item 7's class).

A connected ``device run`` keeps its :class:`ReportQueue` open for hours while other
processes share the device folder: a readout making offline (QR) reports takes numbers from
the same series. Each process here runs at a barrier on one folder: one "runner" reserves,
stores and acknowledges reports through a long-lived queue, the others take numbers for
offline reports. Every sequence number must be used exactly once (a number used twice is a
report the fleet refuses as a replay: a lost report), and nothing queued may be lost.

``unsafe_stale=True`` turns off the queue's reload from storage (its state is then what the
process last saw, as before the fix); the same race then hands out numbers twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.trust.test_concurrency import RaceError, open_store, run_together
from tinyward.link.queue import ReportQueue
from tinyward.readout.offline import OFFLINE_REPORT_SIZE, make_offline_report
from tinyward.readout.state import DisplayState
from tinyward.trust.device import Device
from tinyward.trust.report import decode_report

RUNNER_REPORTS = 40
READOUTS = 3
READOUT_REPORTS = 15


def offline_reserve(base: Path) -> int:
    """What :func:`tinyward.readout.offline.make_offline_report` does for its number."""
    return ReportQueue.reserve_offline(open_store(base)).seq


def _runner(index: int, barrier: Any, base: Path, unsafe: bool) -> tuple[list[int], int]:
    queue = ReportQueue(open_store(base), unsafe_stale=unsafe)
    barrier.wait()
    stored = []
    for i in range(RUNNER_REPORTS):
        r = queue.reserve()
        queue.put(r.seq, b"report-%d" % r.seq, r.dropped_reports)
        stored.append(r.seq)
        if i % 4 == 3:  # the server stores (and acknowledges) all but the newest
            queue.acknowledge(stored[-2])
    return stored, queue.acked


def _readout(index: int, barrier: Any, base: Path, unsafe: bool) -> list[int]:
    barrier.wait()
    return [offline_reserve(base) for _ in range(READOUT_REPORTS)]


def _job(index: int, barrier: Any, base: Path, unsafe: bool) -> Any:
    return (_runner if index == 0 else _readout)(index, barrier, base, unsafe)


def queue_race(base: Path, unsafe: bool) -> tuple[list[int], list[int], int, list[int]]:
    """(every number used, the runner's stored numbers, its last ack, what a reopened
    queue still holds)."""
    ReportQueue(open_store(base))  # created before the race
    results = run_together(1 + READOUTS, _job, base, unsafe, errors_ok=unsafe)
    if any(isinstance(r, RaceError) for r in results):
        return [], [], 0, []
    (stored, acked), offline = results[0], results[1:]
    used = stored + [seq for seqs in offline for seq in seqs]
    reopened = ReportQueue(open_store(base))
    return used, stored, acked, [seq for seq, _ in reopened.pending()]


def test_runner_and_readouts_never_share_a_sequence_number(tmp_path: Path) -> None:
    used, stored, acked, pending = queue_race(tmp_path, unsafe=False)
    total = RUNNER_REPORTS + READOUTS * READOUT_REPORTS
    assert sorted(used) == list(range(1, total + 1)), "a number was used twice or skipped"
    assert pending == [seq for seq in stored if seq > acked], "a queued report was lost"


def test_unsafe_stale_queue_hands_out_numbers_twice(tmp_path: Path) -> None:
    for round_ in range(5):  # until the processes overlap
        used, _, _, _ = queue_race(tmp_path / str(round_), unsafe=True)
        if len(set(used)) < len(used):
            return
    raise AssertionError("the race never showed with the queue's reload off")


# ---- the same with a real device: `device run`'s queue and `device readout`'s QR reports --


def _device_job(index: int, barrier: Any, folder: Path) -> Any:
    device = Device.open(folder)
    if index == 0:
        queue = ReportQueue(device.storage)  # as the connected runner opens it
        barrier.wait()
        stored = []
        for _ in range(RUNNER_REPORTS // 2):
            r = queue.reserve()
            queue.put(r.seq, b"report-%d" % r.seq, r.dropped_reports)
            stored.append(r.seq)
        return stored
    barrier.wait()
    key = device.signer("report").public_key()
    state = DisplayState(results=({"count": index},))
    return [decode_report(make_offline_report(device, state)).verify(
        key, size=OFFLINE_REPORT_SIZE).seq for _ in range(READOUT_REPORTS // 3)]


def test_device_run_and_readout_reports_never_share_a_number(tmp_path: Path) -> None:
    folder = tmp_path / "device"
    Device.init(folder)
    results = run_together(1 + READOUTS, _device_job, folder)
    used = [seq for seqs in results for seq in seqs]
    assert sorted(used) == list(range(1, len(used) + 1)), "a number was used twice or skipped"
    pending = ReportQueue(Device.open(folder).storage).pending()
    assert [seq for seq, _ in pending] == results[0], "a queued report was lost"


if __name__ == "__main__":  # python tests/link/test_queue_concurrency.py: both sides
    import collections
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    for unsafe in (True, False):
        used, stored, acked, pending = queue_race(Path(tempfile.mkdtemp()), unsafe)
        counts = collections.Counter(used)
        print(f"{'reload off (unsafe_stale)' if unsafe else 'reload on':<26} "
              f"{len(used)} numbers used, {len(counts)} distinct, "
              f"{sum(1 for c in counts.values() if c > 1)} used more than once; queued reports "
              f"{'all kept' if pending == [s for s in stored if s > acked] else 'LOST'}")
