"""`tinyward fleet serve --workers 2 --alert webhook:…` as an operator runs it: metrics
summed over the workers (multiprocess mode), an alert for a device's incident, and one log
line per connection and refusal with no secret in the log."""

from __future__ import annotations

import http.client
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fleet.helpers import PASSPHRASE, SERVER_PASSPHRASE
from tinyward.fleet.guards import create_admin_token
from tinyward.fleet.pki import Fleet
from tinyward.lab.fleetproc import server_environment
from tinyward.lab.simdevice import SimulatedDevice

from .serverkit import COSE_TYPE
from .test_alerts import Receiver


def _serve(fleet: Fleet, log: Path, *extra: str) -> tuple[subprocess.Popen[str], int, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tinyward", "fleet", "serve", str(fleet.directory), "--port",
         "0", "--admin-port", "0", *extra],
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
        env=server_environment(SERVER_PASSPHRASE))
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"https://127\.0\.0\.1:(\d+) \(admin: https://127\.0\.0\.1:(\d+)", line)
    if not match:
        process.kill()
        process.wait(30)
        raise AssertionError(f"the server did not start: {line!r} {log.read_text()}")
    return process, int(match.group(1)), int(match.group(2))


def _post(device: SimulatedDevice, folder: Path, port: int, body: bytes) -> int:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", port, context=device.client_context(folder), timeout=20)
    try:  # a new connection each time: the dealer deals them round-robin to the workers
        connection.request("POST", "/v1/reports", body=body,
                           headers={"Content-Type": COSE_TYPE})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _scrape(fleet: Fleet, port: int, token: str) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                           float]:
    import ssl

    context = ssl.create_default_context(cafile=str(fleet.root_ca_path))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
    try:
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        text = response.read().decode()
        assert response.status == 200, text
    finally:
        connection.close()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.mark.slow
def test_two_workers_metrics_summed_alert_sent_log_lines(tmp_path: Path) -> None:
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE, server_passphrase=SERVER_PASSPHRASE)
    device = SimulatedDevice.enrolled(fleet, PASSPHRASE)
    token = create_admin_token(fleet.directory)
    receiver = Receiver()
    log = tmp_path / "server.log"
    process, port, admin = _serve(fleet, log, "--workers", "2",
                                  "--alert", f"webhook:{receiver.url}")
    try:
        now = int(time.time())
        folder = tmp_path / "tls"
        # Connections 1, 3, 5 go to the first worker, 2 and 4 to the second.
        statuses = [_post(device, folder, port, device.report(timestamp=now))
                    for _ in range(2)]
        flagged = device.report(timestamp=now, incidents={"net.anomaly": 2})
        statuses.append(_post(device, folder, port, flagged))
        statuses.append(_post(device, folder, port, device.report(timestamp=now)))
        statuses.append(_post(device, folder, port, flagged))  # sent again, same worker: 409
        assert statuses == [200, 200, 200, 200, 409]
        assert receiver.got.wait(30), log.read_text()
        found = _scrape(fleet, admin, token)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        receiver.close()
    assert code == 0
    # The first worker stored reports 1 and 3 (and refused the replay), the second 2 and
    # 4: a total of 4 means the second worker's counts were summed in (without
    # multiprocess mode the first worker's scrape says 2).
    assert found[("tinyward_reports_stored_total", ())] == 4
    assert found[("tinyward_refusals_total", (("reason", "replay"),))] == 1
    assert found[("tinyward_incidents_total", (("kind", "net.anomaly"),))] == 2
    assert found[("tinyward_ingest_seconds_count", (("endpoint", "report"),))] == 4
    assert found[("tinyward_devices", (("state", "ok"),))] == 1
    # the alert: the incident, never the report's results
    (alert,) = receiver.bodies
    assert alert["kind"] == "net.anomaly" and alert["count"] == 2
    assert alert["device_id"] == device.device_id and "results" not in alert
    text = log.read_text()
    lines = [line for line in text.splitlines() if "tinyward.fleet.access" in line]
    connections = [line for line in lines if " connection listener=device " in line]
    assert len(connections) >= 5 and all(f"device={device.device_id[:8]} " in line
                                         for line in connections)
    assert any("refused listener=device" in line and "reason=replay" in line for line in lines)
    assert device.device_id not in text  # only its prefix
    assert SERVER_PASSPHRASE.decode() not in text and token not in text


def test_a_bad_alert_sink_is_one_error_line_before_anything_starts(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tinyward.cli.main import cli

    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE, server_passphrase=None)
    result = CliRunner().invoke(cli, ["fleet", "serve", str(fleet.directory), "--port", "0",
                                      "--admin-port", "0", "--alert", "webhook:http://example.com/x"],
                                env=server_environment(None))
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "loopback" in lines[0]
