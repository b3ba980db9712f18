"""Running a device: constant-size reports on schedule, store-and-forward, clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.link.conftest import World
from tests.link.liveserver import LiveFleetServer
from tinyward.assess.attacks.listeners import listening_sockets
from tinyward.link.errors import DeviceBusy
from tinyward.link.queue import ReportQueue
from tinyward.link.runner import DeviceLock, DeviceRunner, RunnerConfig, SimulatedSensor
from tinyward.link.shaper import ShaperConfig
from tinyward.trust.device import Device

FAST = RunnerConfig(shaper=ShaperConfig(interval=0.1), drain=3.0)


def counted(reports: int, drain: float = 60.0) -> RunnerConfig:
    """A run bounded by a count of reports, not by the clock: how many reports a run makes
    must not depend on how busy the machine is. ``drain`` only bounds a run that cannot
    deliver; a delivered queue ends it at once."""
    return RunnerConfig(shaper=ShaperConfig(interval=0.1), drain=drain, reports=reports)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_device_delivers_every_report_it_makes(world: World) -> None:
    device = world.device("a")
    with LiveFleetServer(world.fleet) as server:
        runner = DeviceRunner(device, server.url, counted(6), SimulatedSensor(rate=20, seed=1))
        stats = runner.run()
    assert stats.generated == 6
    assert server.stored[device.device_id] == [1, 2, 3, 4, 5, 6]
    assert len(runner.queue) == 0 and runner.queue.acked == 6


def test_reports_wait_while_the_server_is_down_and_arrive_in_order_later(world: World) -> None:
    device = world.device("a")
    port = _free_port()
    offline = DeviceRunner(device, f"https://127.0.0.1:{port}", counted(3, drain=0.0),
                           SimulatedSensor(seed=2))
    stats = offline.run()
    # Whether a connection was tried before the run ended depends on the machine's load
    # (drain=0: the run ends when the last report is made), so only the queue is asserted.
    assert stats.generated == 3 and stats.acked_seqs == []
    queued = [seq for seq, _ in ReportQueue(Device.open(device.directory).storage).pending()]
    assert queued == [1, 2, 3]
    with LiveFleetServer(world.fleet, port=port) as server:
        again = DeviceRunner(Device.open(device.directory), server.url, counted(2),
                             SimulatedSensor(seed=3))
        more = again.run()
    assert more.generated == 2
    assert server.stored[device.device_id] == [1, 2, 3, 4, 5]


def test_one_runner_per_device(world: World) -> None:
    device = world.device("a")
    with DeviceLock(device.directory), pytest.raises(DeviceBusy):
        DeviceRunner(device, "https://127.0.0.1:1", FAST).run(duration=0.1)


def _spawn(device_dir: Path, server: str, status: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tinyward", "device", "run", str(device_dir), "--server", server,
         "--interval", "0.1", "--backoff-max", "0.5", "--status-file", str(status), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.slow
def test_running_device_holds_no_listening_socket(world: World, tmp_path: Path) -> None:
    device = world.device("a")
    status = tmp_path / "status.json"
    with LiveFleetServer(world.fleet) as server:
        proc = _spawn(device.directory, server.url, status)
        try:
            _wait_for(lambda: _status(status).get("acknowledged_seq", 0) >= 3)
            # Connected and reporting: it has an established connection and no listener.
            import psutil
            conns = psutil.Process(proc.pid).net_connections(kind="inet")
            assert any(c.status == psutil.CONN_ESTABLISHED for c in conns)
            assert listening_sockets([proc.pid]) == []
            ss = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False)
            assert f"pid={proc.pid}," not in ss.stdout
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
    assert proc.returncode == 0


@pytest.mark.slow
def test_sigterm_keeps_queued_reports_for_the_next_run(world: World, tmp_path: Path) -> None:
    device = world.device("a")
    port = _free_port()
    status = tmp_path / "status.json"
    proc = _spawn(device.directory, f"https://127.0.0.1:{port}", status)
    _wait_for(lambda: _status(status).get("generated", 0) >= 5)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=20)
    # Nothing reached a server: a failed run (exit 1, docs/cli.md), with nothing lost.
    assert proc.returncode == 1, err
    assert err.splitlines()[-1].startswith("error: no report was delivered")
    final = _status(status)
    assert final["state"] == "stopped"
    queued = ReportQueue(Device.open(device.directory).storage).pending()
    assert [s for s, _ in queued] == list(range(1, final["generated"] + 1))
    assert "still queued (kept for the next run)" in err
    # The next run delivers them all, in order.
    with LiveFleetServer(world.fleet, port=port) as server:
        proc = _spawn(device.directory, server.url, status, "--duration", "0.3", "--drain", "5")
        proc.communicate(timeout=30)
    stored = server.stored[device.device_id]
    assert stored[: final["generated"]] == list(range(1, final["generated"] + 1))
    assert stored == sorted(stored) and len(stored) == len(set(stored))


def test_the_listener_check_does_see_a_listening_socket() -> None:
    """A control for the checks above: a process that listens is reported."""
    proc = subprocess.Popen([sys.executable, "-c", ("import socket,time\n"
                             "s=socket.create_server(('127.0.0.1',0))\nprint('up',flush=True)\n"
                             "time.sleep(30)")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        assert len(listening_sockets([proc.pid])) >= 1
    finally:
        proc.kill()
        proc.wait()


GOOD_APP = Path(__file__).resolve().parents[1] / "app" / "good"


@pytest.mark.parametrize("app, expect", [("good", None), ("crash", "app_crash")])
def test_the_sandboxed_application_can_be_the_source(world: World, app: str,
                                                       expect: str | None) -> None:
    import json
    import shutil
    import tempfile

    from tinyward.app.frames import simulated_frames
    from tinyward.app.manifest import load_manifest
    from tinyward.app.source import AppResultSource
    from tinyward.assess.hostile_apps import copy_app

    # Copy the app with its target.json (hostile apps read it) where the sandbox's uid can
    # read it (pytest's tmp_path is 0700 root).
    outer = Path(tempfile.mkdtemp(prefix="tinyward-link-app-", dir="/tmp"))
    outer.chmod(0o755)
    folder = outer / "app"
    if app == "good":
        shutil.copytree(GOOD_APP, folder)
    else:
        copy_app(app, folder)  # a hostile app
    (folder / "target.json").write_text(json.dumps({}))
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    manifest = load_manifest(folder / "sensor.toml")
    def frames():  # every 2nd frame carries the hostile apps' trigger value (666)
        for i, frame in enumerate(simulated_frames(manifest, 1)):
            if i % 2 == 1 and expect is not None:
                frame = frame.copy()
                frame[0, 0] = 666
            yield frame

    from tinyward.app.supervisor import SupervisorConfig

    source = AppResultSource.start(manifest, frames(), SupervisorConfig(fault_window_s=0.5))
    device = world.device("a")
    try:
        with LiveFleetServer(world.fleet) as server:
            DeviceRunner(device, server.url, RunnerConfig(shaper=ShaperConfig(interval=0.5),
                                                          drain=3.0), source).run(duration=2.5)
    finally:
        source.close()
        shutil.rmtree(outer, ignore_errors=True)
    reports = server.reports[device.device_id]
    assert len(reports) >= 3
    told = {k for r in reports for k, n in r.incidents.items() if k.startswith("app_") and n}
    if expect is None:
        assert any(r.results for r in reports) and not told
    else:  # what the application did wrong travels in the reports, as counts
        assert expect in told, [dict(r.incidents) for r in reports]
        assert any(r.health == "degraded" for r in reports) or told
