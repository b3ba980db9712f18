"""What the device signs about itself is true (issue 12, item 10).

The mode in status, attestation tokens and reports is the one actually enforced in the
running process tree (tried there), never the provisioned one; a device provisioned
air-gapped refuses to connect until re-provisioned; one running instance per device
folder in every mode.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinyward.cli.main import cli
from tinyward.fleet.pki import Fleet
from tinyward.readout import state as display
from tinyward.readout.offline import make_offline_report
from tinyward.trust.device import Device
from tinyward.trust.instance import InstanceLock, running_instance
from tinyward.trust.report import verify_report

PASSPHRASE = b"correct horse battery staple"
TINYWARD = str(Path(sys.executable).with_name("tinyward"))
GOOD_APP = Path(__file__).resolve().parents[1] / "app" / "good"


@pytest.fixture
def fleet_and_device(tmp_path: Path) -> tuple[Fleet, Device]:
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE)
    device = Device.init(tmp_path / "device")
    device.install(fleet.enroll(device.enrolment_request, PASSPHRASE))
    return fleet, device


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A folder the sandbox's uid (nobody) may read: the app goes here."""
    path = Path(tempfile.mkdtemp(prefix="tinyward-mode-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _verify(fleet: Fleet, token: Path, nonce: bytes, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["attest", "verify", str(token),
                                      "--fleet", str(fleet.directory), "--nonce", nonce.hex(),
                                      *extra])
    return result.exit_code, result.output


def _run(device: Device, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TINYWARD, "device", "run", str(device.directory), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_air_gapped_provisioned_device_refuses_to_connect(fleet_and_device) -> None:
    _, device = fleet_and_device
    device.set_mode("air-gapped")
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.5)
        port = server.getsockname()[1]
        out = _run(device, "--server", f"https://127.0.0.1:{port}", "--interval", "0.2",
                   "--duration", "3")
        assert out.returncode != 0, out.stderr
        assert "provisioned for air-gapped use" in out.stderr and "Traceback" not in out.stderr
        with pytest.raises(TimeoutError):
            server.accept()  # not even a TCP handshake
        # Re-provisioned, it connects (the listener speaks no TLS: the attempt is what counts).
        assert CliRunner().invoke(cli, ["device", "set-mode", str(device.directory),
                                        "connected"]).exit_code == 0
        proc = subprocess.Popen([TINYWARD, "device", "run", str(device.directory),
                                 "--server", f"https://127.0.0.1:{port}",
                                 "--interval", "0.2", "--duration", "20"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            server.settimeout(30)
            server.accept()[0].close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_mode_is_not_claimed_after_an_air_gapped_run(fleet_and_device, tmp_path) -> None:
    """A connected device ran air-gapped once: afterwards nothing may still say air-gapped."""
    fleet, device = fleet_and_device
    out = _run(device, "--air-gapped", "--interval", "0.1", "--duration", "1")
    assert out.returncode == 0, out.stderr
    status = json.loads(CliRunner().invoke(cli, ["device", "status", str(device.directory),
                                                 "--json"]).output)
    assert status["mode"] == "not running" and status["provisioned_mode"] == "connected"
    nonce = os.urandom(32)
    token = tmp_path / "token.cbor"
    made = CliRunner().invoke(cli, ["device", "attest", str(device.directory), "--nonce",
                                    nonce.hex(), "-o", str(token)])
    assert made.exit_code == 0, made.output
    code, output = _verify(fleet, token, nonce)
    assert code == 0, output
    assert json.loads(output)["claims"]["operating_mode"] == "connected"
    code, output = _verify(fleet, token, nonce, "--expect-mode", "air-gapped")
    assert code != 0 and "operating_mode" in output


def test_provisioned_mode_alone_is_not_claimed(fleet_and_device) -> None:
    """The API: a token made where no filter is in force says connected, whatever was
    provisioned; made under the filter, air-gapped."""
    from tinyward.fleet.attestation import verify_fleet_token

    fleet, device = fleet_and_device
    device.set_mode("air-gapped")
    nonce = os.urandom(32)
    _, claims = verify_fleet_token(fleet, device.attestation_token(nonce), nonce)
    assert claims.operating_mode == "connected"


def test_air_gapped_device_attests_under_its_filter(fleet_and_device, tmp_path) -> None:
    fleet, device = fleet_and_device
    device.set_mode("air-gapped")
    nonce = os.urandom(32)
    token = tmp_path / "token.cbor"
    made = subprocess.run([TINYWARD, "device", "attest", str(device.directory), "--nonce",
                           nonce.hex(), "-o", str(token)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    code, output = _verify(fleet, token, nonce, "--expect-mode", "air-gapped")
    assert code == 0, output


def test_readout_of_a_connected_device_says_connected(fleet_and_device) -> None:
    _, device = fleet_and_device
    state = display.load(device.storage)
    assert state.mode == "connected"  # the readout's title
    report = make_offline_report(device, state)
    cert = device.certificate_path("report").read_bytes()
    from cryptography import x509

    key = x509.load_pem_x509_certificate(cert).public_key()
    assert verify_report(report, key, size=512).mode == "connected"  # type: ignore[arg-type]

    # Stale results of an earlier air-gapped run while the device now runs connected.
    display.save(device.storage, display.DisplayState(1, ({"n": 1},), mode="air-gapped"))
    with InstanceLock(device.directory, "connected"):
        assert display.stated_mode(device.directory, display.load(device.storage)) == "connected"
        report = make_offline_report(device, display.load(device.storage))
        assert verify_report(report, key, size=512).mode == "connected"  # type: ignore[arg-type]
    assert display.stated_mode(device.directory, display.load(device.storage)) == "air-gapped"


def _wait_running(device: Device, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        running = running_instance(device.directory)
        if running is not None and running.mode == "air-gapped":
            return
        time.sleep(0.1)
    raise AssertionError(f"the first instance did not start: {proc.poll()}")


def test_two_air_gapped_runs_on_one_folder_are_refused(fleet_and_device) -> None:
    _, device = fleet_and_device
    first = subprocess.Popen([TINYWARD, "device", "run", str(device.directory), "--air-gapped",
                              "--interval", "0.2", "--duration", "60"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_running(device, first)
        second = _run(device, "--air-gapped", "--interval", "0.2", "--duration", "3")
        assert second.returncode != 0 and "another process is running" in second.stderr
        connected = _run(device, "--server", "https://127.0.0.1:9", "--duration", "3")
        assert connected.returncode != 0 and "another process is running" in connected.stderr
        status = Device.open(device.directory).status()
        assert status["mode"] == "air-gapped"
        assert "air gap: seccomp network filter" in status["protections"]
    finally:
        first.terminate()
        first.wait(timeout=30)
    assert running_instance(device.directory) is None


def test_running_device_signs_its_mode_and_protections(
    fleet_and_device, world_tmp, tmp_path
) -> None:
    fleet, device = fleet_and_device
    app = world_tmp / "good"
    shutil.copytree(GOOD_APP, app)
    for root, _dirs, files in os.walk(world_tmp):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    nonce = os.urandom(32)
    token = tmp_path / "token.cbor"
    out = _run(device, "--air-gapped", "--app", str(app / "sensor.toml"), "--interval", "0.2",
               "--duration", "1", "--attest-nonce", nonce.hex(), "--attest-out", str(token))
    assert out.returncode == 0, out.stderr
    assert "[on ] filesystem isolation" in out.stderr
    code, output = _verify(fleet, token, nonce, "--expect-mode", "air-gapped",
                           "--expect-protection", "filesystem isolation",
                           "--expect-protection", "seccomp",
                           "--expect-protection", "air gap: seccomp network filter")
    assert code == 0, output
    # What keeps other processes' memory out of the core's reach is signed too.
    expected = ["air gap: other processes out of ptrace reach (Landlock)"]
    if os.geteuid() == 0:
        expected.append("air gap: capabilities dropped (kept: CAP_KILL, CAP_SETGID, CAP_SETUID)")
    for name in expected:
        code, output = _verify(fleet, token, nonce, "--expect-protection", name)
        assert code == 0, output
    claims = json.loads(output)["claims"]
    assert {c["measurement_type"] for c in claims["software_components"]} == {"PRoT", "App"}
    code, output = _verify(fleet, token, nonce, "--expect-protection", "landlock-v99")
    assert code != 0 and "protections" in output
