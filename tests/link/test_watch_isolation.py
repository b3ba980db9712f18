"""The application never sees the traffic the trusted core watches (attack first).

A hostile app, in the real sandbox, tries on one frame to find the core's capture socket
among its descriptors, then to open a packet socket of its own and read the device's
traffic. With the sandbox as a device runs it, both fail (the capture socket is
close-on-exec and the child gets only its two pipes; seccomp refuses ``socket()``, and
the app's uid lacks CAP_NET_RAW). The control switches seccomp and the uid drop off: the
app then reads the device's frames — what those layers prevent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs
from tinyward.app.manifest import load_manifest
from tinyward.app.sandbox import SandboxConfig
from tinyward.app.supervisor import Supervisor, SupervisorConfig
from tinyward.link.watch_capture import CaptureSocket

pytestmark = [pytest.mark.slow, needs(os.geteuid() == 0, "a capture socket needs root")]
TRIGGER = 666


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def _frame(value: int = 100) -> np.ndarray:
    return np.full((20, 1), value, dtype=np.int16)


@pytest.fixture
def capture() -> Iterator[CaptureSocket]:
    with CaptureSocket("lo") as sock:
        yield sock


@pytest.fixture
def app(capture: CaptureSocket) -> Iterator[Path]:
    outer = Path(tempfile.mkdtemp(prefix="tinyward-watch-app-", dir="/tmp"))
    try:
        outer.chmod(0o755)
        folder = outer / "capture"
        shutil.copytree(Path(__file__).parent / "watch_apps" / "capture", folder)
        inode = os.fstat(capture.fileno()).st_ino
        (folder / "target.json").write_text(json.dumps({"inode": inode, "interface": "lo"}))
        for path in [folder, *folder.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield folder / "sensor.toml"
    finally:
        shutil.rmtree(outer, ignore_errors=True)


@pytest.fixture
def traffic() -> Iterator[None]:
    """Datagrams on loopback, for a packet socket to read."""
    stop = threading.Event()

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.wait(0.02):
                with contextlib.suppress(OSError):
                    s.sendto(b"x" * 40, ("127.0.0.1", 9))

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=2)


def _supervise(manifest: Path, **sandbox: object) -> Supervisor:
    sup = Supervisor(load_manifest(manifest), SandboxConfig(frame_deadline_s=5.0, **sandbox),
                     SupervisorConfig(backoff_initial_s=1.0, fault_window_s=0.0), Clock())
    assert sup.start(), sup.incidents()
    return sup


def test_attack_app_reads_the_watched_traffic_refused(app, capture, traffic):
    with _supervise(app) as sup:
        assert sup.process(_frame()).result is not None
        outcome = sup.process(_frame(TRIGGER))
        # Neither the core's socket nor one of its own: the sandbox refused, a crash.
        assert outcome.result is None and outcome.incident == "crash", outcome
    # The core's capture is untouched and still sees the device's traffic.
    import select

    assert select.select([capture], [], [], 2.0)[0]
    assert capture.read() is not None


def test_attack_app_reads_the_watched_traffic_refused_by_uid_drop_without_seccomp(
        app, capture, traffic):
    # Second layer: seccomp off, the app's uid (nobody) has no CAP_NET_RAW.
    with _supervise(app, unsafe_no_seccomp=True, required=()) as sup:
        assert {p.name: p.active for p in sup.protections}["separate uid"]
        outcome = sup.process(_frame(TRIGGER))
        assert outcome.result is None and outcome.incident == "crash", outcome


def test_unsafe_control_without_seccomp_and_uid_drop_the_app_reads_the_traffic(
        app, capture, traffic):
    # Landlock off as well, so that the app can list its descriptors: the core's capture
    # socket is still not among them (count 1 would say it was).
    with _supervise(app, unsafe_no_seccomp=True, unsafe_keep_uid=True, unsafe_no_landlock=True,
                    required=()) as sup:
        outcome = sup.process(_frame(TRIGGER))
        # count 2: its own packet socket read the device's frames (the core's socket was
        # still not among its descriptors: count would be 1).
        assert outcome.result == {"count": 2, "state": "anomaly"}, outcome
