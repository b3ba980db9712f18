"""`tinyward inspect cert|bundle|token|report FILE [--json]` on the real files tinyward
writes: readable text, JSON that says the same, and one error line for the wrong file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tinyward.cli.main import cli
from tinyward.fleet.pki import Fleet
from tinyward.readout.offline import make_offline_report, to_text
from tinyward.readout.state import DisplayState
from tinyward.trust.device import Device

PASSPHRASE = "inspect test passphrase"
NONCE = "cd" * 32


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fleet, a provisioned device, and one of each file inspect shows."""
    tmp = tmp_path_factory.mktemp("inspect")
    fleet = Fleet.init(tmp / "fleet", PASSPHRASE.encode())
    device = Device.init(tmp / "dev")
    bundle = fleet.enroll(device.enrolment_request, PASSPHRASE.encode())
    device.install(bundle)
    (tmp / "bundle.json").write_bytes(bundle.to_json())
    assert run("device", "attest", str(tmp / "dev"), "--nonce", NONCE, "-o",
               str(tmp / "token.cbor")).exit_code == 0
    report = make_offline_report(device, DisplayState(
        results=({"people": 3, "direction": "in", "confidence": 0.87654},),
        incidents={"app_crash": 2}, health="degraded"), now=1_790_000_000)
    (tmp / "report.txt").write_text(to_text(report) + "\n")
    (tmp / "report.bin").write_bytes(report)
    return {"fleet": tmp / "fleet", "bundle": tmp / "bundle.json", "token": tmp / "token.cbor",
            "report": tmp / "report.txt", "report.bin": tmp / "report.bin",
            "device_id": Path(device.device_id), "server": fleet.server_certificate_path}


def test_inspect_cert(made: dict[str, Path]) -> None:
    result = run("inspect", "cert", str(made["server"]))
    assert result.exit_code == 0, result.output
    cert = x509.load_pem_x509_certificate(made["server"].read_bytes())
    pin = Fleet.open(made["fleet"]).server_spki_sha256.hex()
    assert "subject:     CN=localhost" in result.output
    assert f"SPKI SHA-256 (pin): {pin}" in result.output
    assert "subject alternative names: localhost, 127.0.0.1" in result.output
    assert "(valid now)" in result.output
    doc = json.loads(run("inspect", "cert", str(made["server"]), "--json").output)
    assert doc["spki_sha256"] == pin and doc["serial"] == f"{cert.serial_number:x}"
    assert doc["extensions"]["basic_constraints"].startswith("CA: no")


def test_inspect_cert_der_and_several(made: dict[str, Path], tmp_path: Path) -> None:
    certs = x509.load_pem_x509_certificates(made["server"].read_bytes())
    (tmp_path / "c.der").write_bytes(certs[0].public_bytes(Encoding.DER))
    assert run("inspect", "cert", str(tmp_path / "c.der")).exit_code == 0
    root = Fleet.open(made["fleet"]).root_ca_path.read_bytes()
    (tmp_path / "two.pem").write_bytes(made["server"].read_bytes() + root)
    doc = json.loads(run("inspect", "cert", str(tmp_path / "two.pem"), "--json").output)
    assert len(doc["certificates"]) == 2 and doc["certificates"][1]["self_signed"] is True


def test_inspect_bundle(made: dict[str, Path]) -> None:
    result = run("inspect", "bundle", str(made["bundle"]))
    assert result.exit_code == 0, result.output
    assert f"device ID:   {made['device_id']}" in result.output
    for purpose in ("tls", "report", "attestation"):
        assert f"{purpose} certificate: serial" in result.output
    doc = json.loads(run("inspect", "bundle", str(made["bundle"]), "--json").output)
    assert doc["server_pin_sha256"] == Fleet.open(made["fleet"]).server_spki_sha256.hex()
    assert doc["root_ca"]["self_signed"] is True


def test_inspect_token(made: dict[str, Path]) -> None:
    result = run("inspect", "token", str(made["token"]))
    assert result.exit_code == 0, result.output
    assert "NOT checked" in result.output  # never mistaken for a verification
    assert f"device ID:      {made['device_id']}" in result.output
    assert f"nonce:          {NONCE}" in result.output
    doc = json.loads(run("inspect", "token", str(made["token"]), "--json").output)
    assert doc["signature"] == "not checked"
    assert doc["claims"]["nonce"] == NONCE and doc["claims"]["operating_mode"] == "connected"


@pytest.mark.parametrize("name", ["report", "report.bin"])
def test_inspect_report(made: dict[str, Path], name: str) -> None:
    result = run("inspect", "report", str(made[name]))
    assert result.exit_code == 0, result.output
    assert "NOT checked" in result.output
    assert "people=3, direction=in, confidence=0.8765" in result.output  # not a repr
    assert "made at:   2026-09-21T" in result.output
    assert "incidents: app_crash 2" in result.output
    doc = json.loads(run("inspect", "report", str(made[name]), "--json").output)
    assert doc["device_id"] == str(made["device_id"]) and doc["health"] == "degraded"
    assert doc["results"] == [{"people": 3, "direction": "in", "confidence": 0.87654}]


@pytest.mark.parametrize(("kind", "wrong"), [("cert", "bundle"), ("bundle", "token"),
                                             ("token", "bundle"), ("report", "bundle")])
def test_inspect_the_wrong_file_is_one_error_line(made: dict[str, Path], kind: str,
                                                  wrong: str) -> None:
    result = run("inspect", kind, str(made[wrong]))
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")


def test_inspect_missing_file(tmp_path: Path) -> None:
    result = run("inspect", "cert", str(tmp_path / "nope.pem"))
    assert result.exit_code == 2 and "file not found" in result.stderr
