"""outage-recovery: a real fleet server (`tinyward fleet serve`), a real enrolled device
folder, its own runner through the probe's proxy, cut for a few seconds and restored.

Controls: a device that throws its queue away while the fleet is unreachable (its events
lost, undeclared) fails; one that never tries again after the outage fails; no fleet
folder is not-tested.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tinyward.assess.model import load_model
from tinyward.assess.probes.base import Budget, Context
from tinyward.assess.probes.outage import Outage, OutageRecovery, StoredRun, verdict
from tinyward.assess.target import make_target
from tinyward.fleet.pki import Fleet
from tinyward.lab.fleetproc import start_fleet_server
from tinyward.link.runner import DeviceRunner
from tinyward.trust.device import Device

pytestmark = pytest.mark.slow


@dataclass
class Uplink:
    fleet_dir: Path
    device_dirs: list[Path]
    port: int


@pytest.fixture(scope="module")
def uplink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uplink]:
    base = tmp_path_factory.mktemp("outage")
    passphrase = secrets.token_urlsafe(16).encode()
    fleet = Fleet.init(base / "fleet", passphrase)
    dirs = []
    for name in ("a", "b", "c"):
        device = Device.init(base / name)
        device.install(fleet.enroll(device.enrolment_request, passphrase))
        dirs.append(base / name)
    server, url = start_fleet_server(fleet.directory, None,
                                     extra=("--rate", "1000", "--burst", "1000"))
    try:
        yield Uplink(base / "fleet", dirs, int(url.rsplit(":", 1)[1]))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)


def run(uplink: Uplink, which: int, fleet_dir: Path | None = None, **kw: Any
        ) -> tuple[str, str]:
    target = make_target(address="127.0.0.1", device_dir=uplink.device_dirs[which],
                         uplink_port=uplink.port, fleet_dir=fleet_dir or uplink.fleet_dir)
    evidence = OutageRecovery(outage=4.0, **kw).run(target, Context(load_model()),
                                                     Budget(120, 10))
    assert [e.requirement for e in evidence] == ["A-OUTAGE-1"]
    return evidence[0].verdict, evidence[0].text


def _stored(ns: list[int], incidents: dict[str, int] | None = None) -> StoredRun:
    return StoredRun((1,), {1: "ok"}, [{"n": n} for n in ns], incidents or {}, [], None)


def test_outage_verdicts() -> None:
    context = Context(load_model())
    assert verdict(Outage(4, 16, 1.0, _stored([1, 2, 3])), context)[0].verdict == "pass"
    assert verdict(Outage(4, 16, 1.0, _stored([1, 3])), context)[0].verdict == "fail"
    assert verdict(Outage(4, 16, 1.0, _stored([1, 3], {"dropped_results": 1})),
                   context)[0].verdict == "pass"  # a gap the device declared
    assert verdict(Outage(4, 16, 1.0, _stored([1, 2, 2, 3])), context)[0].verdict == "fail"
    assert verdict(Outage(4, 0, 1.0, _stored([1, 2])), context)[0].verdict == "fail"
    assert verdict(Outage(4, 16, None, _stored([1, 2])), context)[0].verdict == "fail"
    assert verdict(Outage(4, 0, None, None, "refused"), context)[0].verdict == "not-tested"
    # The device counts report 2 as delivered; the fleet never stored it.
    assert verdict(Outage(4, 16, 1.0, _stored([1]), delivered=(1, 2)),
                   context)[0].verdict == "fail"
    assert verdict(Outage(4, 16, 1.0, _stored([1]), delivered=(1, 1)),
                   context)[0].verdict == "pass"


def test_a_tinyward_device_rides_out_a_fleet_outage(uplink: Uplink) -> None:
    result, text = run(uplink, 0)
    print(text)
    assert result == "pass", text
    assert "0 missing, 0 stored twice" in text


class ForgetsWhenDown(DeviceRunner):
    """No store-and-forward: what could not be sent is marked delivered and forgotten."""

    def deliver(self, deadline: float) -> None:
        failures = self.stats.failures
        super().deliver(deadline)
        if self.stats.failures > failures and self.stats.last_seq:
            self.queue.acknowledge(self.stats.last_seq)


def test_control_a_device_that_forgets_its_queue_fails(uplink: Uplink) -> None:
    result, text = run(uplink, 1, make_runner=lambda d, u, c, s: ForgetsWhenDown(d, u, c, s))
    assert result == "fail", text
    # Which shows depends on when the path came back: reports it forgot, missing from
    # the store, and (once a later report is stored) the events they carried.
    assert "not in the fleet's store, undeclared" in text or \
        "events lost and not declared" in text, text


class GivesUp(DeviceRunner):
    """Stops trying after its first failure (waits for someone to restart it)."""

    def deliver(self, deadline: float) -> None:
        if not self.stats.failures:
            super().deliver(deadline)


def test_control_a_device_that_never_reconnects_fails(uplink: Uplink) -> None:
    result, text = run(uplink, 2, recovery=8.0,
                       make_runner=lambda d, u, c, s: GivesUp(d, u, c, s))
    assert result == "fail" and "did not deliver its queue" in text, text


def test_without_the_fleet_folder_it_is_not_tested(uplink: Uplink, tmp_path: Path) -> None:
    target = make_target(address="127.0.0.1", device_dir=uplink.device_dirs[0],
                         uplink_port=uplink.port)
    evidence = OutageRecovery().run(target, Context(load_model()), Budget(120, 10))
    assert evidence[0].verdict == "not-tested" and "--fleet-dir" in evidence[0].text
