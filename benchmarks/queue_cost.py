"""Benchmark: CPU time of one report through the store-and-forward queue.

    .venv/bin/python benchmarks/queue_cost.py [--reports 60] [--capacity 256] [--dir /dev/shm]

One report is reserve + put + acknowledge (what the connected runner does per report when
the server is up). Measured in steady state: the ring has been filled once, so every slot
record exists (a reload reads them all). Three variants, each on a fresh device folder:

- ``format 1 (memory)``: the queue as it was before it reloaded (from git, if available);
- ``reload off``: today's queue with ``unsafe_stale=True`` (the same work, minus the reload);
- ``reload on``: today's queue, which rebuilds itself from storage before every change
  (one counter read while nobody else changed the queue);
- ``reload on + offline``: the worst case, another process taking an offline number
  before every report, so each report's reserve re-reads every slot (its time includes
  that offline reservation).

CPU time (``time.process_time``) excludes waiting for fsync; wall time is printed too.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tinyward.link.queue import QueueConfig, ReportQueue
from tinyward.trust.rot import FileRootOfTrust
from tinyward.trust.storage import ProtectedStorage

REPORT = bytes(512)  # a padded report's size


def _storage(base: Path) -> ProtectedStorage:
    return ProtectedStorage(base / "storage",
                            FileRootOfTrust.create(base / "root.key", base / "counters"))


def _old_queue_class() -> Any | None:
    """The in-memory queue of commit 5743fd8 (before the reload), or None outside git."""
    repo = Path(__file__).resolve().parents[1]
    try:
        source = subprocess.run(["git", "-C", str(repo), "show",  # noqa: S603, S607 - fixed argv
                                 "5743fd8:src/tinyward/link/queue.py"],
                                capture_output=True, check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp(prefix="tinyward-bench-")) / "queue_v1.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("queue_v1", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules["queue_v1"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.ReportQueue


def _cycle(queue: Any, offline: bool = False) -> None:
    if offline:  # another process took a number: the next change reloads everything
        ReportQueue.reserve_offline(queue._storage)
    r = queue.reserve()
    queue.put(r.seq, REPORT, r.dropped_reports)
    queue.acknowledge(r.seq)


def measure(make_queue: Any, base: Path, capacity: int, reports: int,
            offline: bool = False) -> tuple[float, float]:
    """(CPU ms, wall ms) per report, after one full turn of the ring."""
    queue = make_queue(_storage(base), QueueConfig(capacity=capacity))
    for _ in range(capacity):
        _cycle(queue)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(reports):
        _cycle(queue, offline)
    return ((time.process_time() - cpu) * 1000 / reports,
            (time.perf_counter() - wall) * 1000 / reports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=60)
    parser.add_argument("--capacity", type=int, default=256)
    parser.add_argument("--dir", type=Path, default=None, help="where the folders go")
    args = parser.parse_args()
    variants: list[tuple[str, Any]] = []
    old = _old_queue_class()
    if old is not None:
        variants.append(("format 1 (memory)", old))
    variants.append(("reload off", lambda s, c: ReportQueue(s, c, unsafe_stale=True)))
    variants.append(("reload on", ReportQueue))
    variants.append(("reload on + offline", ReportQueue))
    print(f"capacity {args.capacity}, {args.reports} reports of reserve+put+ack")
    print(f"{'variant':<20} {'CPU ms/report':>14} {'wall ms/report':>15} {'CPU % at 10 s':>14}")
    for name, make in variants:
        with tempfile.TemporaryDirectory(prefix="tinyward-bench-", dir=args.dir) as tmp:
            cpu, wall = measure(make, Path(tmp), args.capacity, args.reports,
                                offline=name.endswith("offline"))
        print(f"{name:<20} {cpu:>14.2f} {wall:>15.2f} {cpu / 100:>13.3f}%")


if __name__ == "__main__":
    sys.exit(main())
