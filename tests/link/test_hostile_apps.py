"""Issue 4's hostile applications, run as a device's application end to end.

Each hostile app (``tinyward.assess.hostile_apps``) runs in the real sandbox as the source of a
real device runner reporting over mutual TLS to a fleet server. Every one must be stopped
or contained, the device must keep reporting, and the incident must show in its reports.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from tests.link.conftest import World
from tests.link.liveserver import LiveFleetServer
from tinyward.assess.hostile_apps import copy_app
from tinyward.link.runner import DeviceRunner, RunnerConfig
from tinyward.link.shaper import ShaperConfig

TRIGGER = 666

# Reports carry the class of the fault (crash, stall, refused), not its detailed kind.
CASES = [
    ("socket", "app_crash"),        # opens a TCP connection: seccomp refuses the socket
    ("keystore", "app_crash"),      # reads the device's key file: Landlock and the uid drop refuse
    ("exec_shell", "app_crash"),    # execs /bin/sh: seccomp refuses execve
    ("raw_frames", "app_refused"),  # writes raw sensor frames into its output (oversize)
    ("big_result", "app_refused"),  # returns 1 MB (oversize)
    ("flood", "app_refused"),       # returns 1,000 results a second (too_frequent)
    ("hang", "app_stall"),          # never answers: per-frame deadline, killed
    ("crash", "app_crash"),         # segfaults
]


@pytest.mark.parametrize("app, incident", CASES, ids=[c[0] for c in CASES])
def test_hostile_app_is_contained_and_reported(world: World, app: str, incident: str) -> None:
    from tinyward.app.frames import simulated_frames
    from tinyward.app.manifest import load_manifest
    from tinyward.app.source import AppLimits, AppResultSource
    from tinyward.app.supervisor import SupervisorConfig

    device = world.device("victim")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.1)
    outer = Path(tempfile.mkdtemp(prefix="tinyward-hostile-", dir="/tmp"))
    outer.chmod(0o755)
    folder = outer / app
    copy_app(app, folder)
    marker = outer / "exec-marker"
    (folder / "target.json").write_text(json.dumps({
        "keystore": str(device.directory / "keys" / "tls.key.pem"),
        "port": listener.getsockname()[1],
        "marker": str(marker),
    }))
    if app == "flood":
        # Frames at 1,000 a second (20 kHz, 20 samples each); the app answers every one
        # although its contract allows 60 results a minute.
        manifest_text = (folder / "sensor.toml").read_text()
        (folder / "sensor.toml").write_text(manifest_text.replace("sample_rate_hz = 20\n",
                                                                   "sample_rate_hz = 20000\n"))
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    manifest = load_manifest(folder / "sensor.toml")

    def frames():  # one attack early on, normal frames before and after it
        for i, frame in enumerate(simulated_frames(manifest, 3)):
            if i == 2 and app != "flood":
                frame = frame.copy()
                frame[0, 0] = TRIGGER
            yield frame

    # A 1 s fault window (60 s on a device) so that the test sees the restart; the flood
    # needs the frame-rate cap raised to flood at all.
    limits = AppLimits(max_frames_per_second=1000.0 if app == "flood" else 20.0)
    source = AppResultSource.start(manifest, frames(), SupervisorConfig(fault_window_s=1.0),
                                   limits)
    try:
        with LiveFleetServer(world.fleet) as server:
            config = RunnerConfig(shaper=ShaperConfig(interval=0.5), drain=3.0)
            # The hang costs the 1 s frame deadline and a restart (at the next 1 s fault
            # window, whose end is also when the incident is published): longer to recover.
            duration = 9.0 if app == "hang" else 6.0
            stats = DeviceRunner(device, server.url, config, source).run(duration=duration)
    finally:
        source.close()
        shutil.rmtree(outer, ignore_errors=True)
    try:
        connection, _ = listener.accept()
        connection.close()
        pytest.fail("the hostile application reached the network")
    except TimeoutError:
        pass
    finally:
        listener.close()
    assert not marker.exists(), "the hostile application ran a program"
    reports = server.reports[device.device_id]
    assert len(reports) >= 4 and stats.generated == len(reports), "the device stopped reporting"
    told = {kind: n for r in reports for kind, n in r.incidents.items() if n}
    assert incident in told, [dict(r.incidents) for r in reports]
    # Nothing off-contract left the device, and results flowed again after the restart.
    with_results = [i for i, r in enumerate(reports) if r.results]
    incident_at = next(i for i, r in enumerate(reports) if r.incidents.get(incident))
    if app != "flood":  # the flood used up the contract's 60 results a minute: none are due yet
        assert any(i > incident_at for i in with_results), "no results after the incident"
    assert len(reports) > incident_at + 1, "the device stopped reporting after the incident"
    for report in reports:
        for result in report.results:
            assert set(result) == {"count", "state"} and 0 <= result["count"] <= 999


def test_device_keeps_reporting_whatever_cbor_its_app_sends(world: World) -> None:
    """Issue 12, item 1, end to end: huge integers, tags, a float overflow, a huge map key
    and deep nesting where results go. Before the fix the first of them killed the runner
    with a traceback (and again after every restart)."""
    import cbor2

    from tinyward.app.frames import simulated_frames
    from tinyward.app.manifest import load_manifest
    from tinyward.app.source import AppResultSource
    from tinyward.app.supervisor import SupervisorConfig

    good = {"count": 1, "state": "normal", "score": 0.5}
    payloads = [cbor2.dumps({**good, "count": 10**5000}), cbor2.dumps({**good, "score": 10**400}),
                cbor2.dumps({**good, 10**5000: 1}), cbor2.dumps({1, 2}),
                b"\x81" * 50_000 + b"\x00", cbor2.dumps({**good, "count": 2**64 - 1})]
    outer = Path(tempfile.mkdtemp(prefix="tinyward-hostile-", dir="/tmp"))
    outer.chmod(0o755)
    folder = outer / "raw_cbor"
    copy_app("raw_cbor", folder)
    (folder / "target.json").write_text(json.dumps({"payloads": [p.hex() for p in payloads]}))
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    manifest = load_manifest(folder / "sensor.toml")

    def frames():  # every 2nd frame carries the next payload's number
        for i, frame in enumerate(simulated_frames(manifest, 3)):
            if i % 2 == 1:
                frame = frame.copy()
                frame[0, 0], frame[1, 0] = TRIGGER, (i // 2) % len(payloads)
            yield frame

    source = AppResultSource.start(manifest, frames(), SupervisorConfig(fault_window_s=0.5))
    device = world.device("cbor")
    try:
        with LiveFleetServer(world.fleet) as server:
            config = RunnerConfig(shaper=ShaperConfig(interval=0.5), drain=3.0)
            stats = DeviceRunner(device, server.url, config, source).run(duration=6.0)
    finally:
        local = source.local_incidents()
        source.close()
        shutil.rmtree(outer, ignore_errors=True)
    reports = server.reports[device.device_id]
    assert len(reports) >= 10 and stats.generated == len(reports), "the device stopped reporting"
    told = sum(r.incidents.get("app_refused", 0) for r in reports)
    assert told >= 2, [dict(r.incidents) for r in reports]
    assert local.get("not_cbor", 0) >= 2 and "core_errors" not in local, local
    for report in reports:
        for result in report.results:
            assert result == good
