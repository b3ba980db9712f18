"""Benchmark: how long the fleet's rollout halt rule takes over a large fleet.

    .venv/bin/python benchmarks/rollout_halt_cost.py [--devices 10000] [--runs 5]

The fleet server applies the rule (``RolloutBook.evaluate``: one SQL query over the
report store, then :mod:`tinyward.fleet.rollout`'s pure tally) before it acknowledges a
report that can change a rollout's tally (a failure, or a device's changed update
status), so this is the latency such a report gains. A real SQLite store (WAL,
``synchronous=FULL``) with ``--devices`` devices that each reported an update state (one
in 50 a revert), one running rollout of 100 %, below its threshold (nothing halts, so
every run does the full work). Wall time per run, the first run included (it fills the
bucket cache).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from tinyward.fleet.rollouts import RolloutBook
from tinyward.fleet.store import SQLiteStore
from tinyward.trust.report import Report, UpdateStatus


class _EveryoneEnrolled:
    def report_key(self, device_id: str) -> object:
        return object()

    def is_revoked(self, device_id: str) -> bool:
        return False

    def cohort(self, device_id: str) -> str | None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteStore(Path(folder) / "reports.db")
        failed = UpdateStatus("reverted", {"app": "1.0.0"}, "crash", ("app", "1.1.0"))
        updated = UpdateStatus("accepted", {"app": "1.1.0"})
        groups = []
        for i in range(args.devices):
            device_id = hashlib.sha256(str(i).encode()).hexdigest()
            update = failed if i % 50 == 0 else updated
            groups.append((device_id, [(Report(device_id, 1, 1000, update=update), b"x")]))
        for start in range(0, len(groups), 500):
            store.append_many(groups[start:start + 500], 2000)
        book = RolloutBook(Path(folder), clock=lambda: 1500.0)
        book.start("app", "1.1.0", "app-1.1.0.tar", percent=100)
        began = time.perf_counter()
        for _ in range(args.runs):
            if book.evaluate(store, _EveryoneEnrolled()):
                raise SystemExit("the rollout halted: the benchmark's fleet is wrong")
        each = (time.perf_counter() - began) / args.runs
        store.close()
    print(f"halt rule over {args.devices:,} reporting devices: {each * 1e3:.0f} ms per "
          f"evaluation ({each / args.devices * 1e6:.1f} us per device), {args.runs} runs")


if __name__ == "__main__":
    main()
