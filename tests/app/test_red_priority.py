"""Red-team variant of issue 12, item 2: CPU modulation while under budget, on a busy device.

On its own frame clock the app cannot delay the report loop directly, but its CPU use
competes with the core's report thread for the processor. Quiet, that showed nothing
(`tinyward bench shaping`: AUC 0.49 on 2 cores, 0.46 on one). With one CPU hog beside the
device (a busy device), the same hostile app got through: AUC 0.60 and 0.67, 117 and 137
of 200 secret bits (chance 100). The app now runs at the lowest CPU priority
(SCHED_IDLE, nice 19), every thread of it, which seccomp does not let it raise: the core
always runs first. With that, under the same hog: see docs/app.md for the figure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tinyward.app.manifest import load_manifest
from tinyward.app.supervisor import Supervisor, SupervisorConfig

pytestmark = pytest.mark.slow


def test_the_app_runs_at_the_lowest_cpu_priority_in_every_thread(hostile, clock) -> None:
    manifest = hostile("latency_bits", {"bits": "1", "slot": 1.0, "busy": 0.0})
    with Supervisor(load_manifest(manifest), None, SupervisorConfig(), clock) as sup:
        assert sup.start(), sup.incidents()
        pid = sup.pid
        assert pid is not None
        tasks = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        assert tasks
        for tid in tasks:
            assert os.sched_getscheduler(tid) == os.SCHED_IDLE, tid
            assert os.getpriority(os.PRIO_PROCESS, tid) == 19, tid
        limits = {p.name: p for p in sup.protections}["resource limits"]
        assert "SCHED_IDLE" in limits.reason


def test_app_cannot_raise_its_priority_again() -> None:
    from tinyward.app import _seccomp

    allowed = " ".join(_seccomp.ALLOWED) if hasattr(_seccomp, "ALLOWED") else Path(
        _seccomp.__file__).read_text()
    for name in ("setpriority", "sched_setscheduler", "sched_setattr", "sched_setparam"):
        assert f" {name} " not in f" {allowed} ", name
