"""On-device detection end to end, in a network namespace this test creates (root).

The device runs as `tinyward device run` inside its namespace, reporting to a real fleet
server on the host end of the veth pair. A benign phase (the device's own reports, UDP
telemetry, short TCP exchanges) is captured and a model trained on it with
`tinyward detect train`; then the device runs with ``--watch`` and an attacker on the host
end sweeps 200 of its ports. The reports stored by the fleet are read back: the report
made after the sweep carries the incident; the reports before it carry none.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs
from tinyward.bench.watch_traffic import BenignTraffic, port_sweep, record
from tinyward.fleet.pki import Fleet
from tinyward.lab.fleetproc import start_fleet_server
from tinyward.link.netns import DeviceNamespace
from tinyward.link.watch import DEFAULT_NET_WARMUP, INCIDENT_KINDS
from tinyward.trust import cose
from tinyward.trust.device import Device
from tinyward.trust.report import decode_report

pytestmark = [pytest.mark.slow,
              needs(os.geteuid() == 0 and shutil.which("ip") is not None,
                    "needs root and iproute2 (network namespaces, a capture socket)")]


def _stored(fleet_dir: Path, device_id: str) -> list[tuple[int, dict[str, int]]]:
    """(seq, incidents) of every stored report, in order."""
    db = fleet_dir / "reports.db"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        rows = conn.execute("SELECT seq, signed FROM signed_reports WHERE device_id = ? "
                            "ORDER BY seq", (device_id,)).fetchall()
    out = []
    for seq, blob in rows:
        payload = cose.loads_cbor(decode_report(blob).sign1.payload, "report")
        out.append((int(seq), dict(payload["inc"])))
    return out


def _wait_for(predicate, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


class Lab:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.ns = DeviceNamespace.create(tag=os.getpid() + 7)
        passphrase = secrets.token_urlsafe(16).encode()
        self.fleet = Fleet.init(base / "fleet", passphrase,
                                server_names=["127.0.0.1", self.ns.host_address])
        self.device = Device.init(base / "device")
        self.device.install(self.fleet.enroll(self.device.enrolment_request, passphrase,
                                              report_interval=1.0))
        # A service port below the ephemeral range: the novelty tuple takes the lower
        # port of a conversation as its service (docs/detect.md).
        self.server, self.url = start_fleet_server(self.fleet.directory, None,
                                                   self.ns.host_address, port=8443)

    def device_run(self, *extra: str, duration: float) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "tinyward", "device", "run", str(self.device.directory),
                "--server", self.url, "--interval", "1", "--duration", str(duration),
                "--drain", "5", *extra]
        return subprocess.Popen(self.ns.command(argv), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def close(self) -> None:
        if self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            self.server.wait(timeout=15)
        self.ns.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("watch"))
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def net_model(lab: Lab) -> Path:
    """Benign phase: the device reporting plus telemetry, captured and trained on."""
    pcap, model = lab.base / "benign.pcap", lab.base / "device-net.json"
    with BenignTraffic(lab.ns):
        proc = lab.device_run(duration=22)
        try:
            time.sleep(1.0)  # the device's first connection is part of normal
            assert record(lab.ns, 20.0, pcap) > 300
        finally:
            out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    done = subprocess.run(
        [sys.executable, "-m", "tinyward", "detect", "train", str(pcap), "--kind",
         "mahalanobis-int8", "--novelty", "pair", "--per-class", "--out", str(model)],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return model


def test_attack_port_sweep_from_the_lan_is_in_the_next_report(lab: Lab, net_model: Path):
    before = _stored(lab.fleet.directory, lab.device.device_id)
    first_new = (before[-1][0] if before else 0) + 1
    with BenignTraffic(lab.ns):
        status_file = lab.base / "sweep-status.json"
        proc = lab.device_run("--watch", lab.ns.device_if, "--net-model", str(net_model),
                              "--status-file", str(status_file), duration=40)
        try:
            # Quiet: at least 18 watched reports (1 s apart) stored before the attack, so
            # the sweep comes after the watcher's warm-up (DEFAULT_NET_WARMUP, 15 s).
            assert DEFAULT_NET_WARMUP < 18
            assert _wait_for(lambda: len([s for s, _ in _stored(
                lab.fleet.directory, lab.device.device_id) if s >= first_new]) >= 18, 60)
            quiet = [r for r in _stored(lab.fleet.directory, lab.device.device_id)
                     if r[0] >= first_new]
            assert port_sweep(lab.ns.device_address, 200) == 200  # every port answered
            swept_after = quiet[-1][0]
        finally:
            out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    assert "watch: network detector: mahalanobis-int8+novelty(pair)+classes: int8 integer " \
           "reference" in out, out
    reports = _stored(lab.fleet.directory, lab.device.device_id)
    watched = [(s, inc) for s, inc in reports if s > swept_after]
    net = [(s, {k: n for k, n in inc.items() if k.startswith("net.")}) for s, inc in watched]
    # The sweep happened after the last quiet report was stored; the report made next (or
    # the one after, if the sweep straddled a tick) carries it.
    assert any(inc for _, inc in net[:3]), (net, out)
    assert all(k in INCIDENT_KINDS for _, inc in net for k in inc)
    # No incident in the quiet reports of the same run (benign traffic only).
    assert [inc for _, inc in quiet if any(k.startswith("net.") for k in inc)] == [], quiet
    # The fleet keeps it as an incident event of the device, with the report that carried it.
    from tinyward.fleet.store import open_store

    store = open_store(f"sqlite:///{lab.fleet.directory / 'reports.db'}")
    try:
        events = store.incidents(lab.device.device_id, limit=1000)
    finally:
        store.close()
    assert any(e.kind.startswith("net.") and e.seq is not None and e.seq > swept_after
               for e in events), events
    # The device's own status file shows the watcher's counters (never sent).
    import json

    watch = json.loads(status_file.read_text())["watch"]
    assert watch["net"]["frames"] > 400 and watch["net"]["errors"] == 0, watch
    assert any(k.startswith("net.") for k in watch["incidents"]), watch
    # Rate-limited: a 200-port sweep is a handful of incidents, not hundreds.
    assert sum(sum(inc.values()) for _, inc in net) <= 3 * len(INCIDENT_KINDS) + 3


def test_watch_refuses_an_interface_the_namespace_lacks(lab: Lab, net_model: Path):
    proc = lab.device_run("--watch", "eth-nonexistent0", "--net-model", str(net_model),
                          duration=2)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "error: no interface named 'eth-nonexistent0' in this network namespace" in out, out


def test_watch_refuses_a_sensor_model_as_the_net_model(lab: Lab, tmp_path: Path):
    csv = tmp_path / "s.csv"
    import numpy as np

    rng = np.random.default_rng(0)
    csv.write_text("a;b\n" + "".join(f"{x:.3f};{y:.3f}\n" for x, y in rng.normal(size=(400, 2))))
    model = tmp_path / "sensor.json"
    subprocess.run([sys.executable, "-m", "tinyward", "detect", "train", "--sensors", str(csv),
                    "--out", str(model)], check=True, capture_output=True, timeout=120)
    proc = lab.device_run("--watch", lab.ns.device_if, "--net-model", str(model), duration=2)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "error: --net-model must be a packet model" in out, out


def test_attack_frozen_sensor_under_the_app_is_in_a_report(lab: Lab, tmp_path: Path):
    """`device run --app … --sensor-model`: the core scores the frames it hands the
    people counter; the sensor freezes after 16 frames (one a second): sensor.tamper."""
    import numpy as np

    rng = np.random.default_rng(11)

    def rows(n: int) -> np.ndarray:
        t = np.arange(n)
        out = 1500 + 40 * np.sin(t / 25)[:, None] + rng.normal(0, 6, (n, 2))
        return np.rint(out)

    benign = tmp_path / "benign.csv"
    benign.write_text("zone_out_mm,zone_in_mm\n"
                      + "".join(f"{a:.0f},{b:.0f}\n" for a, b in rows(4000)))
    model = tmp_path / "sensor.json"
    subprocess.run([sys.executable, "-m", "tinyward", "detect", "train", "--sensors",
                    str(benign), "--out", str(model)], check=True, capture_output=True,
                   timeout=300)
    frames = tmp_path / "frames.csv"
    live = np.vstack([rows(16 * 20), np.full((14 * 20, 2), 1512.0)])
    frames.write_text("zone_out_mm,zone_in_mm\n"
                      + "".join(f"{a:.0f},{b:.0f}\n" for a, b in live))
    outer = Path(tempfile.mkdtemp(prefix="tinyward-watch-app-", dir="/tmp"))
    try:
        outer.chmod(0o755)
        app = outer / "people_counter"
        shutil.copytree(Path(__file__).resolve().parents[2] / "examples" / "people_counter",
                        app, ignore=shutil.ignore_patterns("__pycache__"))
        for path in [app, *app.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        first_new = (_stored(lab.fleet.directory, lab.device.device_id) or [(0, {})])[-1][0] + 1
        proc = lab.device_run("--app", str(app / "sensor.toml"), "--frames", str(frames),
                              "--sensor-model", str(model), duration=36)
        out, _ = proc.communicate(timeout=120)
    finally:
        shutil.rmtree(outer, ignore_errors=True)
    assert proc.returncode == 0, out
    assert "application frames scored" in out, out
    run = [(s, inc) for s, inc in _stored(lab.fleet.directory, lab.device.device_id)
           if s >= first_new]
    tamper = [s for s, inc in run if inc.get("sensor.tamper")]
    assert tamper, (run, out)
    # the first ten reports of the run came before any frozen frame was handed over
    assert min(tamper) >= run[0][0] + 10, (run, out)
