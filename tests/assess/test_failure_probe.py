"""failure-reporting: a real fleet server (`tinyward fleet serve`), a real enrolled device
folder whose sandboxed application hangs on one frame and whose update client refuses a
rollback; the fleet's store must show both for that device.

Control: a device whose reports leave out its failures (``unsafe_silent``: no incidents,
always healthy, no update status) fails; no fleet folder is not-tested.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs
from tinyward.app import _landlock
from tinyward.assess.model import load_model
from tinyward.assess.probes.base import Budget, Context
from tinyward.assess.probes.failure import FailureReporting, Observed, verdict
from tinyward.assess.probes.outage import StoredRun
from tinyward.assess.target import make_target
from tinyward.fleet.pki import Fleet
from tinyward.lab.fleetproc import start_fleet_server
from tinyward.trust.device import Device

pytestmark = pytest.mark.slow
# The sandbox as `device run` configures it requires Landlock (as the hostile probe's).
SANDBOX = needs(_landlock.abi_version() > 0, "Landlock is not available in this kernel")


@dataclass
class Uplink:
    fleet_dir: Path
    device_dirs: list[Path]
    port: int


@pytest.fixture(scope="module")
def uplink() -> Iterator[Uplink]:
    # Under /tmp, traversable, as the hostile probe's tests: the sandbox user must reach
    # nothing here but the app, which the probe copies out.
    base = Path(tempfile.mkdtemp(prefix="tinyward-failure-", dir="/tmp"))
    passphrase = secrets.token_urlsafe(16).encode()
    fleet = Fleet.init(base / "fleet", passphrase)
    dirs = []
    for name in ("a", "b"):
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
        shutil.rmtree(base, ignore_errors=True)


def run(uplink: Uplink, which: int, **kw: Any) -> tuple[str, str]:
    target = make_target(address="127.0.0.1", device_dir=uplink.device_dirs[which],
                         uplink_port=uplink.port, fleet_dir=uplink.fleet_dir)
    evidence = FailureReporting(**kw).run(target, Context(load_model()), Budget(120, 10))
    assert [e.requirement for e in evidence] == ["A-FAIL-1"]
    return evidence[0].verdict, evidence[0].text


def _stored(health: str = "degraded", incidents: dict[str, int] | None = None,
            why: str | None = "rollback") -> StoredRun:
    return StoredRun((1, 2), {1: "ok", 2: health}, [], incidents or {"app_fault": 1}, [], why)


def test_failure_verdicts() -> None:
    context = Context(load_model())
    hang = {"hang": 1}
    assert verdict(Observed(hang, "rollback", _stored()), context)[0].verdict == "pass"
    assert verdict(Observed(hang, "rollback", _stored(health="ok")),
                   context)[0].verdict == "fail"
    assert verdict(Observed(hang, "rollback", _stored(incidents={"x": 1})),
                   context)[0].verdict == "fail"
    assert verdict(Observed(hang, "rollback", _stored(why=None)), context)[0].verdict == "fail"
    # Nothing failed on the device: nothing to report, nothing shown.
    assert verdict(Observed({}, "rollback", _stored()), context)[0].verdict == "not-tested"
    assert verdict(Observed(hang, "rollback", None, "refused"),
                   context)[0].verdict == "not-tested"


@SANDBOX
def test_a_tinyward_device_reports_a_failing_app_and_a_refused_attack(
        uplink: Uplink) -> None:
    result, text = run(uplink, 0)
    print(text)
    assert result == "pass", text
    assert "update refusal rollback" in text and "hang" in text


@SANDBOX
def test_control_a_device_that_keeps_its_failures_to_itself_fails(uplink: Uplink) -> None:
    result, text = run(uplink, 1, unsafe_silent=True)
    assert result == "fail", text
    assert "in no incident" in text and "not in the fleet's record" in text, text


def test_without_the_fleet_folder_it_is_not_tested(uplink: Uplink) -> None:
    target = make_target(address="127.0.0.1", device_dir=uplink.device_dirs[0],
                         uplink_port=uplink.port)
    evidence = FailureReporting().run(target, Context(load_model()), Budget(120, 10))
    assert evidence[0].verdict == "not-tested" and "--fleet-dir" in evidence[0].text
