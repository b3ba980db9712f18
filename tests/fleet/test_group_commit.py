"""Group commit across requests (fleet/server.py ``_GroupCommitter``): reports of several
requests share one transaction, and nobody is acknowledged before that transaction is
committed. No timing is asserted: a window of an hour with a small ``max_groups`` makes
"full" the only trigger."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tinyward.fleet.server import _GroupCommitter
from tinyward.fleet.store import SQLiteStore
from tinyward.trust.report import Report

A, B, C = "aa" * 32, "bb" * 32, "cc" * 32
HOUR = 3600.0


def _r(device: str, seq: int) -> list[tuple[Report, bytes]]:
    return [(Report(device, seq, 1000 + seq), b"signed-%d" % seq)]


class _Counting(SQLiteStore):
    """A real SQLite store that counts its transactions and can hold one open."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.commits: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.fail = False

    def append_many(self, groups: Sequence[tuple[str, Sequence[tuple[Report, bytes]]]],
                    received_at: int) -> list[int]:
        self.entered.set()
        self.release.wait(30)
        if self.fail:
            raise OSError("disk full (simulated)")
        stored = super().append_many(groups, received_at)
        self.commits.append([device for device, _ in groups])
        return stored


@pytest.fixture
def store(tmp_path: Path) -> _Counting:
    return _Counting(tmp_path / "r.db")


def test_reports_of_concurrent_requests_share_one_commit(store: _Counting) -> None:
    async def run() -> list[int]:
        with ThreadPoolExecutor(1) as executor:
            committer = _GroupCommitter(store, executor, window=HOUR, max_groups=3)
            return await asyncio.gather(committer.append(A, _r(A, 1)),
                                        committer.append(B, _r(B, 1)),
                                        committer.append(C, _r(C, 1)))

    assert asyncio.run(run()) == [1, 1, 1]
    assert store.commits == [[A, B, C]]  # one transaction for three requests


def test_no_report_is_acknowledged_before_its_commit(store: _Counting) -> None:
    store.release.clear()

    async def run() -> None:
        with ThreadPoolExecutor(1) as executor:
            committer = _GroupCommitter(store, executor, window=HOUR, max_groups=2)
            first = asyncio.ensure_future(committer.append(A, _r(A, 1)))
            second = asyncio.ensure_future(committer.append(B, _r(B, 1)))
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, store.entered.wait, 30)
            await asyncio.sleep(0)
            assert not first.done() and not second.done()  # the commit has not returned
            assert store.last_seq(A) == 0
            store.release.set()
            assert await asyncio.gather(first, second) == [1, 1]

    asyncio.run(run())
    assert store.last_seq(A) == store.last_seq(B) == 1


def test_a_failed_group_commit_acknowledges_nobody(store: _Counting) -> None:
    store.fail = True

    async def run() -> list[object]:
        with ThreadPoolExecutor(1) as executor:
            committer = _GroupCommitter(store, executor, window=HOUR, max_groups=2)
            return await asyncio.gather(committer.append(A, _r(A, 1)),
                                        committer.append(B, _r(B, 1)),
                                        return_exceptions=True)

    assert [type(result) for result in asyncio.run(run())] == [OSError, OSError]
    assert store.last_seq(A) == store.last_seq(B) == 0


def test_without_a_window_each_request_commits_at_once(store: _Counting) -> None:
    async def run() -> None:
        with ThreadPoolExecutor(1) as executor:
            committer = _GroupCommitter(store, executor, window=0.0)
            assert await committer.append(A, _r(A, 1)) == 1
            assert await committer.append(A, _r(A, 2)) == 2

    asyncio.run(run())
    assert store.commits == [[A], [A]]
