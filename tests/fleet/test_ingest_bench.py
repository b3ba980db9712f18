"""The ingest benchmark runs end to end (tiny sizes: this checks it works, not its speed)."""

from __future__ import annotations

import pytest

from tinyward.bench.ingest import run_ingest


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_bench_ingest_stores_every_report_once(batch: int) -> None:
    result = run_ingest(devices=3, reports=7, batch=batch, workers=1)
    assert result.stored == 7
    assert result.seconds > 0 and result.p99_ms >= result.p50_ms > 0
    assert result.verify_per_core > 0
    # CPU times come in 10 ms clock ticks: a run this small may read 0, never less.
    assert result.server_cpu_seconds >= 0 and result.connect_server_cpu_seconds >= 0
    assert len(result.worker_cpu_seconds) == 1  # one figure per server process
    assert result.connect_seconds > 0
    assert result.reports_per_second_with_connect < result.reports_per_second
