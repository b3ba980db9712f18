"""The shaper: one batch per interval on a fixed grid, bounded, quiet == busy on the wire."""

from __future__ import annotations

import random

import pytest

from tinyward.errors import Misuse
from tinyward.link.shaper import (
    TLS13_RECORD_OVERHEAD,
    Shaper,
    ShaperConfig,
    bandwidth_bytes_per_hour,
)


def _run(shaper: Shaper, events: list[float], until: float, step: float) -> list:
    """Drive the shaper with an injected clock; events are result times."""
    batches, t, pending = [], 0.0, sorted(events)
    for _ in range(int(until / step) + 1):
        while pending and pending[0] <= t:
            shaper.add_result({"event": "motion", "at": pending.pop(0)})
        batch = shaper.poll(t)
        if batch is not None:
            batches.append(batch)
        t += step
    return batches


def test_one_batch_per_interval_on_a_fixed_grid_whether_or_not_anything_happened() -> None:
    shaper = Shaper(ShaperConfig(interval=2.0), start=0.0)
    batches = _run(shaper, events=[], until=20.0, step=0.1)
    assert [round(b.slot, 6) for b in batches] == [2.0 * k for k in range(1, 11)]
    assert all(b.results == () for b in batches)


def test_results_wait_for_the_next_tick_and_are_not_sent_early() -> None:
    shaper = Shaper(ShaperConfig(interval=5.0), start=0.0)
    shaper.add_result({"event": "motion"})
    assert shaper.poll(4.999) is None
    batch = shaper.poll(5.0)
    assert batch is not None and batch.results == ({"event": "motion"},)
    assert shaper.poll(5.5) is None


def test_busy_and_quiet_runs_have_the_same_schedule() -> None:
    rng = random.Random(7)
    busy = _run(Shaper(ShaperConfig(interval=1.0), 0.0),
                [rng.uniform(0, 30) for _ in range(40)], until=30.0, step=0.05)
    quiet = _run(Shaper(ShaperConfig(interval=1.0), 0.0), [], until=30.0, step=0.05)
    assert [b.slot for b in busy] == [b.slot for b in quiet]
    assert sum(len(b.results) for b in busy) > 0


def test_overflow_is_counted_not_silent() -> None:
    shaper = Shaper(ShaperConfig(interval=1.0, max_results=3), 0.0)
    accepted = [shaper.add_result({"n": i}) for i in range(5)]
    assert accepted == [True, True, True, False, False]
    batch = shaper.poll(1.0)
    assert batch is not None and len(batch.results) == 3 and batch.dropped_results == 2
    assert shaper.add_result({"n": 9}) is True


def test_a_suspended_caller_skips_missed_slots_and_counts_them() -> None:
    shaper = Shaper(ShaperConfig(interval=1.0), 0.0)
    batch = shaper.poll(5.5)
    assert batch is not None and batch.slot == 5.0 and batch.missed_slots == 4
    assert shaper.next_due() == 6.0
    assert shaper.poll(5.9) is None


@pytest.mark.parametrize("kwargs", [{"interval": 0}, {"interval": float("nan")},
                                    {"size": 10}, {"size": 10**6}, {"max_results": 99}])
def test_bad_configuration_is_refused(kwargs: dict) -> None:
    with pytest.raises(Misuse):
        ShaperConfig(**kwargs)


def test_bandwidth_formula() -> None:
    cost = bandwidth_bytes_per_hour(ShaperConfig(interval=10.0, size=1024),
                                    request_overhead=150, response_bytes=200)
    assert cost == (1024 + 150 + 200 + 2 * TLS13_RECORD_OVERHEAD) * 360


def test_quiet_and_busy_reports_have_the_same_size_on_the_wire(signer) -> None:
    """A full batch and an empty one become reports of exactly the configured size."""
    import time

    from tinyward.trust import report as codec

    config = ShaperConfig(interval=1.0, size=1024)
    busy = Shaper(config, 0.0)
    for i in range(config.max_results + 3):
        busy.add_result({"event": "motion", "score": 0.999, "n": 10**6 + i, "label": "x" * 20})
    quiet = Shaper(config, 0.0)
    sizes = set()
    device_id = "ab" * 32
    for shaper in (busy, quiet):
        batch = shaper.poll(1.0)
        assert batch is not None
        report = codec.Report(device_id, 1, int(time.time()), results=batch.results,
                              incidents={"dropped_results": batch.dropped_results,
                                         "dropped_reports": 0})
        sizes.add(len(codec.encode_report(report, signer, config.size)))
    assert sizes == {1024}
