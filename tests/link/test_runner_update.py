"""The runner fills each report's ``upd`` field from the update agent's status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.link.conftest import World
from tests.link.liveserver import LiveFleetServer
from tinyward.link.runner import DeviceRunner, RunnerConfig, SimulatedSensor
from tinyward.link.shaper import ShaperConfig
from tinyward.trust.report import UpdateStatus


def test_each_report_carries_the_update_status_of_its_tick(world: World) -> None:
    device = world.device("a")
    states = iter([
        {"state": "downloading", "ver": {"app": "1.0.0"}, "tgt": {"app": "1.1.0"}},
        {"state": "reverted", "ver": {"app": "1.0.0"}, "why": "health-deadline",
         "tgt": {"app": "1.1.0"}},
        {"state": "exploded", "ver": {}},  # the agent's bug: left out, the report still goes
    ])

    def status() -> Mapping[str, Any]:
        return next(states)

    config = RunnerConfig(shaper=ShaperConfig(interval=0.1), drain=60.0, reports=3)
    with LiveFleetServer(world.fleet) as server:
        DeviceRunner(device, server.url, config, SimulatedSensor(rate=0, seed=1),
                     update_status=status).run()
    got = [report.update for report in server.reports[device.device_id]]
    assert got == [
        UpdateStatus("downloading", {"app": "1.0.0"}, None, ("app", "1.1.0")),
        UpdateStatus("reverted", {"app": "1.0.0"}, "health-deadline", ("app", "1.1.0")),
        None,
    ]


class _Flood:
    """A source whose results never fit in one report."""

    def take(self, now: float) -> list[Mapping[str, Any]]:
        return [{"blob": "x" * 250} for _ in range(8)]

    def next_time(self) -> float | None:
        return None


def test_results_that_do_not_fit_are_dropped_but_the_update_status_stays(world: World) -> None:
    device = world.device("b")
    status = {"state": "reverted", "ver": {"app": "1.0.0"}, "why": "crash",
              "tgt": {"app": "1.1.0"}}
    config = RunnerConfig(shaper=ShaperConfig(interval=0.1), drain=60.0, reports=1)
    with LiveFleetServer(world.fleet) as server:
        DeviceRunner(device, server.url, config, _Flood(), update_status=lambda: status).run()
    (report,) = server.reports[device.device_id]
    assert report.results == () and report.incidents["dropped_results"] > 0
    assert report.update == UpdateStatus("reverted", {"app": "1.0.0"}, "crash", ("app", "1.1.0"))
