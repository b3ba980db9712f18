"""What an eavesdropper on the uplink sees of incidents: nothing (sizes), with a control.

A device reports to the real fleet server through a recording proxy; its source raises
incidents before about half of its reports (seeded). Every upstream record of the run has
one of the same two sizes (the HTTP request head, the fixed-size report) whether or not
the report carries an incident, and the stored reports show that some did and some did
not. The control runs the naive design — an alert report sent when an incident happens
(shaping off): the observer then sees a report exactly when there was one. Timing is
measured by `tinyward bench watch` (AUC), not asserted here.
"""

from __future__ import annotations

import random
import secrets
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tinyward.fleet.pki import Fleet
from tinyward.lab.fleetproc import start_fleet_server
from tinyward.lab.proxy import TCPProxy
from tinyward.link.client import LinkConfig
from tinyward.link.runner import DeviceRunner, RunnerConfig
from tinyward.link.shaper import TLS13_RECORD_OVERHEAD, ShaperConfig
from tinyward.link.watch import IncidentLimits, Incidents
from tinyward.trust.device import Device

pytestmark = pytest.mark.slow
SIZE = 1024


class Source:
    """Raises a net.anomaly incident before a seeded half of the reports."""

    def __init__(self, alert: bool) -> None:
        self.incidents_ = Incidents(IncidentLimits(k=1, burst=1e6, per_second=1e6))
        self._rng = random.Random(5)
        self._alert = alert
        self._t = 0.0
        self._slot = -1
        self.raised = 0

    def take(self, now: float) -> list[Mapping[str, Any]]:
        slot = int(now / 0.1)  # at most one draw per report interval
        if slot != self._slot and self._rng.random() < 0.5:
            self._slot = slot
            self._t += 1.0
            self.incidents_.alarm("net.anomaly", self._t)
            self.raised += 1
            return [{"event": "alert"}] if self._alert else []
        self._slot = slot
        return []

    def next_time(self) -> float | None:
        return None

    def incidents(self) -> dict[str, int]:
        return self.incidents_.totals()


def _run(tmp_path: Path, alert: bool) -> tuple[list[int], int, int, int]:
    passphrase = secrets.token_urlsafe(16).encode()
    fleet = Fleet.init(tmp_path / "fleet", passphrase)
    device = Device.init(tmp_path / "device")
    device.install(fleet.enroll(device.enrolment_request, passphrase))
    server, url = start_fleet_server(fleet.directory, None,
                                     extra=("--rate", "1000", "--burst", "1000"))
    try:
        proxy = TCPProxy(("127.0.0.1", int(url.rsplit(":", 1)[1])), record=True)
        source = Source(alert)
        runner = DeviceRunner(device, proxy.url, RunnerConfig(
            shaper=ShaperConfig(interval=0.1, size=SIZE), drain=5.0, reports=40,
            link=LinkConfig(backoff_initial=0.05, backoff_max=0.5),
            unsafe_unshaped=alert), source)
        runner.run(duration=30)
        proxy.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
    up = [r for r in proxy.records if r.upstream and r.content_type == 23]
    # TLS 1.3 with a client certificate: the client's Certificate, CertificateVerify and
    # Finished travel as the first three application-data records of each connection.
    per_connection: dict[int, list[int]] = {}
    for r in up:
        per_connection.setdefault(r.connection, []).append(r.length)
    after = [n for lengths in per_connection.values() for n in lengths[3:]]
    return after, runner.stats.generated, source.raised, len(per_connection)


def test_incidents_do_not_change_what_the_uplink_carries(tmp_path):
    sizes, reports, raised, _ = _run(tmp_path, alert=False)
    assert reports >= 40 and 5 < raised < reports - 5  # some reports with, some without
    report = SIZE + TLS13_RECORD_OVERHEAD
    # after the handshakes: one request head and one fixed-size report per report, the
    # same two sizes whether the report carries an incident or not
    assert sizes.count(report) >= reports
    assert len(set(sizes)) == 2 and report in sizes, sorted(set(sizes))


def test_unsafe_control_alert_reports_appear_only_with_incidents(tmp_path):
    sizes, reports, raised, _ = _run(tmp_path, alert=True)
    # an alert-at-once device sends a report per incident and nothing otherwise: the
    # observer counts the incidents from the wire
    assert reports == raised
    assert sizes.count(SIZE + TLS13_RECORD_OVERHEAD) == raised
