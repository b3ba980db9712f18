"""The sandboxed application as a results source: frames at the manifest's rate, incidents counted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from tinyward.app.manifest import load_manifest
from tinyward.app.source import AppResultSource

from .conftest import TRIGGER, frame


def frames_with_attack_at(index: int, total: int) -> Iterator[np.ndarray]:
    for i in range(total):
        yield frame(TRIGGER if i == index else 100 + i)


def test_results_follow_the_frame_rate(hostile: Callable[[str, dict[str, object]], Path]) -> None:
    manifest = load_manifest(hostile("crash", {}))
    source = AppResultSource.start(manifest, frames_with_attack_at(-1, 100))
    try:
        period = 60.0 / manifest.input.frames_per_minute
        first = source.take(0.0)
        later = source.take(3 * period + period / 2)
        assert len(first) == 1 and len(later) == 3
        assert source.incidents() == {} and source.healthy
    finally:
        source.close()


def test_a_crashing_app_is_counted_and_the_source_keeps_going(
    hostile: Callable[[str, dict[str, object]], Path],
) -> None:
    manifest = load_manifest(hostile("crash", {}))
    source = AppResultSource.start(manifest, frames_with_attack_at(2, 100))
    try:
        period = 60.0 / manifest.input.frames_per_minute
        results = source.take(0.0) + source.take(4 * period)
        assert source.incidents().get("app_crash") == 1
        assert len(results) >= 2  # the frames before the crash
        # After the restart backoff (0.5 s of real time inside the supervisor) results flow again.
        import time

        time.sleep(0.6)
        more = source.take(40 * period)
        assert more, "no results after the restart"
        assert source.healthy
    finally:
        source.close()


def test_an_exhausted_frame_log_is_unhealthy(hostile: Callable[[str, dict[str, object]], Path]) -> None:
    manifest = load_manifest(hostile("crash", {}))
    source = AppResultSource.start(manifest, frames_with_attack_at(-1, 2))
    try:
        source.take(0.0)
        source.take(1000.0)
        assert not source.healthy and source.frames_fed == 2
    finally:
        source.close()
