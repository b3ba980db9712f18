"""The quiet-device detector: one incident per silence, cleared by a report, bounded work
per tick, no repeat after a restart; alerts and metrics for what it raises."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tinyward.fleet.alerts import AlertSender
from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.incidents import QUIET, QuietWatch
from tinyward.fleet.pki import Fleet
from tinyward.fleet.server import FleetServer
from tinyward.fleet.store import SQLiteStore
from tinyward.lab.simdevice import SimulatedDevice
from tinyward.trust.report import Report

from .serverkit import PASSPHRASE

T0 = 1_800_000_000


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def deliver(self, payload: dict[str, Any]) -> None:
        self.payloads.append(payload)


def _report(store: SQLiteStore, device: SimulatedDevice, at: float) -> None:
    seq = store.last_seq(device.device_id) + 1
    store.append(device.device_id, [(Report(device.device_id, seq, int(at)), b"x")],
                 received_at=int(at))


def _server(tmp_path: Path, schedules: dict[str, float | None]
            ) -> tuple[FleetServer, SQLiteStore, dict[str, SimulatedDevice], Clock, Recorder]:
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE)
    devices = {name: SimulatedDevice.enrolled(fleet, PASSPHRASE, interval)
               for name, interval in schedules.items()}
    store = SQLiteStore(tmp_path / "reports.db")
    clock, recorder = Clock(), Recorder()
    sender = AlertSender([recorder], window=0.0)
    server = FleetServer(FleetDirectory(fleet), store, clock=clock, alerts=sender)
    return server, store, devices, clock, recorder


def _quiet_incidents(store: SQLiteStore, device: SimulatedDevice) -> list[Any]:
    return store.incidents(device.device_id, kind=QUIET)


def test_quiet_once_per_silence_then_cleared_then_again(tmp_path: Path) -> None:
    server, store, devices, clock, recorder = _server(tmp_path, {"q": 10.0, "ok": 10.0})
    quiet, talker = devices["q"], devices["ok"]
    _report(store, quiet, T0)
    _report(store, talker, T0)

    async def run() -> None:
        assert await server.check_quiet() == 0  # just reported: not quiet
        clock.now = T0 + 31  # quiet after max(3 × 10, 10 + 30) = 40 s: 31 s is inside
        assert await server.check_quiet() == 0
        clock.now = T0 + 41  # beyond 40 s: quiet
        _report(store, talker, clock.now)  # the other device keeps talking
        assert await server.check_quiet() == 1
        for _ in range(5):  # the same silence: nothing more
            clock.now += 60
            _report(store, talker, clock.now)
            assert await server.check_quiet() == 0
        _report(store, quiet, clock.now)  # it reports again: cleared
        assert await server.check_quiet() == 0
        clock.now += 41  # and goes quiet again: a new incident
        _report(store, talker, clock.now)
        assert await server.check_quiet() == 1

    asyncio.run(run())
    assert server.alerts is not None and server.alerts.drain()
    found = _quiet_incidents(store, quiet)
    assert len(found) == 2 and all(i.seq is None and i.device_time is None for i in found)
    assert found[-1].evidence.startswith("no report for 41 s (schedule 10 s")
    assert not _quiet_incidents(store, talker)
    assert [p["kind"] for p in recorder.payloads] == [QUIET, QUIET]
    assert {p["device_id"] for p in recorder.payloads} == {quiet.device_id}
    text = server.metrics.render().decode()
    metrics = {s.labels.get("kind"): s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name == "tinyward_incidents_total"}
    assert metrics[QUIET] == 2
    # devices by state, from the detector's last pass (no store reads at scrape time)
    assert server.quiet.watch.passes > 0
    assert server.quiet.states == {quiet.device_id: "quiet", talker.device_id: "ok"}
    gauge = {s.labels["state"]: s.value for f in text_string_to_metric_families(text)
             for s in f.samples if s.name == "tinyward_devices"}
    assert gauge["quiet"] == 1 and gauge["ok"] == 1 and gauge["never"] == 0
    server.alerts.close()


def test_never_reported_revoked_or_quarantined_not_quiet(tmp_path: Path) -> None:
    server, store, devices, clock, _ = _server(
        tmp_path, {"never": 10.0, "revoked": 10.0, "quarantined": 10.0})
    fleet = server.directory.fleet
    for name in ("revoked", "quarantined"):
        _report(store, devices[name], T0)
    fleet.revoke(devices["revoked"].device_id)
    fleet.quarantine(devices["quarantined"].device_id)
    clock.now = T0 + 10_000
    assert asyncio.run(server.check_quiet()) == 0
    assert not store.incidents(kind=QUIET)


def test_no_second_incident_for_the_same_silence_after_a_restart(tmp_path: Path) -> None:
    server, store, devices, clock, _ = _server(tmp_path, {"q": 10.0})
    _report(store, devices["q"], T0)
    clock.now = T0 + 100
    assert asyncio.run(server.check_quiet()) == 1
    restarted = FleetServer(server.directory, store, clock=clock)  # empty memory
    clock.now += 100
    assert asyncio.run(restarted.check_quiet()) == 0
    assert len(_quiet_incidents(store, devices["q"])) == 1


def test_bounded_work_per_tick() -> None:
    """Each tick looks at most `batch` devices; the list is read once per full pass."""
    listed: list[int] = []
    ids = [f"{i:064x}" for i in range(1050)]

    def list_ids() -> list[str]:
        listed.append(1)
        return ids

    watch = QuietWatch(batch=500)
    seen: list[str] = []
    for _ in range(watch.passes_for(len(ids))):
        chunk = watch.next_slice(list_ids)
        assert len(chunk) <= 500
        seen += chunk
    assert sorted(seen) == ids and len(listed) == 1 and watch.passes == 1
    assert len(watch.next_slice(list_ids)) == 500 and len(listed) == 2  # the next pass


def test_watch_raise_and_clear_rule() -> None:
    watch = QuietWatch()
    assert watch.saw("a", "quiet") == "raise"
    watch.raised("a")
    assert watch.saw("a", "quiet") is None
    assert watch.saw("a", "ok") == "clear"
    assert watch.saw("a", "ok") is None
    assert watch.saw("a", "quiet") == "raise"
