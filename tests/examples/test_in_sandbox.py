"""Both example apps run in the real sandbox and answer exactly as they do in-process.

This is what makes the evaluations mean something for the device: the code evaluated is
the code the sandbox runs, fed the same frames.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.examples.conftest import EXAMPLES, SKAB, entry, load, requires_skab
from tinyward.app.manifest import load_manifest
from tinyward.app.sandbox import SandboxConfig
from tinyward.app.supervisor import Supervisor, SupervisorConfig

pytestmark = pytest.mark.slow


class Clock:
    """The device's clock, advanced one frame period per frame (replay faster than real time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def installed() -> Iterator[Path]:
    """A world-traversable copy of examples/ (the sandbox runs the app as nobody)."""
    root = Path(tempfile.mkdtemp(prefix="tinyward-examples-", dir="/tmp"))
    root.chmod(0o755)
    for name in ("people_counter", "pump_monitor"):
        shutil.copytree(EXAMPLES / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for dirpath, _, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def run_both(
    manifest_path: Path, name: str, frames: list[np.ndarray], period_s: float
) -> list[dict[str, object]]:
    """Feed frames to the sandboxed app and to an in-process copy; the sandbox's results."""
    clock = Clock()
    manifest = load_manifest(manifest_path)
    sup = Supervisor(manifest, SandboxConfig(frame_deadline_s=5.0),
                     SupervisorConfig(cpu_share=None), clock)  # replayed faster than real time
    direct = entry(name)
    results = []
    try:
        assert sup.start(), sup.incidents()
        active = {p.name for p in sup.protections if p.active}
        assert {"seccomp", "resource limits"} <= active, sup.protections
        for frame in frames:
            outcome = sup.process(frame)
            assert outcome.incident is None, outcome
            assert outcome.result == direct.process(frame)
            if outcome.result is not None:
                results.append(outcome.result)
            clock.now += period_s
        assert sup.incidents() == {} and sup.healthy
    finally:
        sup.close()
    return results


@requires_skab
def test_pump_monitor_in_sandbox_matches_in_process(installed: Path) -> None:
    skab = load("pump_monitor", "skab")
    run = skab.read_run(SKAB / "other" / "9.csv")
    results = run_both(
        installed / "pump_monitor" / "sensor.toml", "pump_monitor", list(skab.frames(run)), 1.0
    )
    assert {"state": "anomaly"} in results


def test_people_counter_in_sandbox_matches_in_process(installed: Path) -> None:
    simulate = load("people_counter", "simulate")
    sensor_log = load("people_counter", "sensor_log")
    frames = list(sensor_log.frames_of(simulate.simulate(21, 25).readings))
    results = run_both(installed / "people_counter" / "sensor.toml", "people_counter", frames, 1.0)
    assert len(results) > 5
