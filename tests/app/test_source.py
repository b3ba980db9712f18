"""The sandboxed application as a results source: its own frame clock, incidents by class."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from tinyward.app.manifest import load_manifest
from tinyward.app.source import AppLimits, AppResultSource
from tinyward.app.supervisor import SupervisorConfig

from .conftest import TRIGGER, frame

Hostile = Callable[[str, dict[str, object]], Path]


def frames_with_attack_at(index: int, total: int) -> Iterator[np.ndarray]:
    for i in range(total):
        yield frame(TRIGGER if i == index else 100 + i)


def wait_for(predicate: Callable[[], bool], limit: float = 60.0) -> None:
    """Poll (bounded) until ``predicate`` holds; the assertion is on the outcome, not the time."""
    end = time.monotonic() + limit
    while not predicate() and time.monotonic() < end:
        time.sleep(0.05)


def test_results_come_from_the_frame_clock_thread(hostile: Hostile) -> None:
    manifest = load_manifest(hostile("crash", {}))
    source = AppResultSource.start(manifest, frames_with_attack_at(-1, 4))
    try:
        got: list[object] = []
        wait_for(lambda: bool(got.extend(source.take(0.0))) or len(got) >= 4)
        assert len(got) == 4 and source.frames_fed == 4
        assert source.incidents() == {}
    finally:
        source.close()


def test_the_core_caps_the_frame_rate_whatever_the_manifest_asks(hostile: Hostile) -> None:
    manifest = load_manifest(hostile("crash", {}))
    assert manifest.input.frames_per_minute == 60.0
    source = AppResultSource.start(manifest, iter(()), limits=AppLimits(max_frames_per_second=0.5))
    try:
        assert source.period == 2.0  # the cap wins over the manifest's 1 frame per second
    finally:
        source.close()


def test_a_crashing_app_is_counted_by_class_once_its_window_is_over(hostile: Hostile) -> None:
    manifest = load_manifest(hostile("crash", {}))
    config = SupervisorConfig(fault_window_s=1.0, backoff_initial_s=0.1)
    source = AppResultSource.start(manifest, frames_with_attack_at(2, 100), config)
    try:
        wait_for(lambda: source.incidents().get("app_crash") == 1)
        assert source.incidents() == {"app_crash": 1}  # the class, not the detailed kind
        assert source.local_incidents()["crash"] == 1
        results: list[object] = []
        wait_for(lambda: bool(results.extend(source.take(0.0))) or len(results) >= 4)
        assert len(results) >= 4, "no results after the restart"
        wait_for(lambda: source.healthy)
        assert source.healthy
    finally:
        source.close()


def test_an_exhausted_frame_log_is_unhealthy(hostile: Hostile) -> None:
    manifest = load_manifest(hostile("crash", {}))
    source = AppResultSource.start(manifest, frames_with_attack_at(-1, 2))
    try:
        wait_for(lambda: not source.healthy)
        assert not source.healthy and source.frames_fed == 2
    finally:
        source.close()
