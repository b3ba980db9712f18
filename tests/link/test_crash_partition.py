"""The issue's crash-and-partition check.

20 devices send 2,000 reports through a loopback TCP proxy to the real fleet server
(``tinyward fleet serve``, SQLite) while the server is killed with SIGKILL twice and
restarted, and the network path is cut and restored. Afterwards the database holds every
generated report exactly once, and every report a device saw acknowledged.

Device folders live on /dev/shm when it exists: a SIGKILL of the *server* behaves the same
on any file system, and the devices' fsyncs would otherwise dominate the run time.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.link.conftest import PASSPHRASE, World
from tinyward.fleet.pki import Fleet
from tinyward.lab.fleetproc import server_environment
from tinyward.lab.proxy import TCPProxy
from tinyward.link.client import LinkConfig
from tinyward.link.runner import DeviceRunner, RunnerConfig, SimulatedSensor
from tinyward.link.shaper import ShaperConfig

DEVICES = 20
REPORTS_EACH = 100


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(fleet_dir: Path, port: int) -> subprocess.Popen:
    env = server_environment(None)  # the server key is in clear (0600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinyward", "fleet", "serve", str(fleet_dir), "--port", str(port),
         "--admin-port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        if "listening on" in line:
            break
        assert time.monotonic() < deadline, "fleet server did not start"
    else:
        raise AssertionError(f"fleet server exited: {proc.wait()}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    return proc


@pytest.fixture
def base(tmp_path: Path):
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="tinyward-crash-", dir=shm))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_crash_and_partition_store_every_report_exactly_once(base: Path) -> None:
    world = World(base, Fleet.init(base / "fleet", PASSPHRASE))
    devices = [world.device(f"d{i:02d}") for i in range(DEVICES)]
    port = _free_port()
    server = _start_server(world.fleet.directory, port)
    proxy = TCPProxy(("127.0.0.1", port))
    config = RunnerConfig(
        shaper=ShaperConfig(interval=0.1),
        link=LinkConfig(connect_timeout=2.0, io_timeout=3.0, backoff_initial=0.1,
                        backoff_max=0.5),
        drain=90.0, reports=REPORTS_EACH)
    runners = [DeviceRunner(d, proxy.url, config, SimulatedSensor(rate=1.0, seed=i))
               for i, d in enumerate(devices)]
    stop = threading.Event()
    threads = [threading.Thread(target=r.run, args=(stop,)) for r in runners]
    started = time.monotonic()
    for t in threads:
        t.start()
    events = []
    try:
        time.sleep(4)
        server.send_signal(signal.SIGKILL)
        server.wait()
        events.append("server SIGKILLed")
        time.sleep(1.5)
        server = _start_server(world.fleet.directory, port)
        time.sleep(3)
        proxy.cut()
        events.append("path cut")
        time.sleep(2)
        proxy.restore()
        time.sleep(3)
        server.send_signal(signal.SIGKILL)
        server.wait()
        events.append("server SIGKILLed again")
        time.sleep(1.5)
        server = _start_server(world.fleet.directory, port)
        for t in threads:
            t.join(timeout=180)
        print(f"\ndevices finished {time.monotonic() - started:.1f} s after they started")
        assert not any(t.is_alive() for t in threads), "a device did not finish"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        proxy.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)

    db = sqlite3.connect(world.fleet.directory / "reports.db")
    total = 0
    for runner, device in zip(runners, devices, strict=True):
        rows = [r[0] for r in db.execute(
            "SELECT seq FROM reports WHERE device_id = ? ORDER BY seq", (device.device_id,))]
        generated = runner.stats.generated
        assert generated == REPORTS_EACH
        assert rows == list(range(1, generated + 1)), "every generated report exactly once"
        assert runner.queue.acked == generated and len(runner.queue) == 0
        assert runner.queue.dropped == 0
        total += len(rows)
    assert total == DEVICES * REPORTS_EACH == 2000
    failures = sum(r.stats.failures for r in runners)
    assert failures > 0, "the outages did not reach the devices: the test proves nothing"
    print(f"\n{total} reports stored exactly once; {failures} failed attempts across "
          f"{events}")
