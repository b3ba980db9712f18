"""`tinyward fleet …` through click's CliRunner: the commands are thin, so these check
wiring, messages and exit codes; the PKI itself is tested in tests/fleet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.fleet.helpers import CLI_SECRETS, UPDATE_PASSPHRASE, request_pem
from tinyward.cli.main import cli
from tinyward.fleet.bundle import DeviceBundle
from tinyward.fleet.pki import Fleet

GOOD = CLI_SECRETS


def _run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, input=stdin)


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    result = _run("fleet", "init", str(tmp_path / "fleet"), env=GOOD)
    assert result.exit_code == 0, result.output
    return tmp_path / "fleet"


def test_cli_init_creates_fleet_and_prints_id_and_pin(fleet_dir: Path) -> None:
    fleet = Fleet.open(fleet_dir)
    result = _run("fleet", "show", str(fleet_dir))
    assert result.exit_code == 0
    assert fleet.fleet_id in result.output
    assert fleet.server_spki_sha256.hex() in result.output
    assert fleet.server_key_path.name == "server.key"  # sealed by default (server passphrase)
    assert sorted(p.name for p in fleet.keys_path.iterdir()) == [
        "device-ca.key", "root-ca.key", "server-next.key", "update-signing.key"]


def test_cli_init_server_names(tmp_path: Path) -> None:
    args = ("fleet", "init", str(tmp_path / "f"), "--server-name", "fleet.lan")
    result = _run(*args, "--server-name", "10.0.0.5", env=GOOD)
    assert result.exit_code == 0, result.output
    assert Fleet.open(tmp_path / "f").server_names == ("fleet.lan", "10.0.0.5")


def test_cli_init_twice_refused(fleet_dir: Path) -> None:
    before = (fleet_dir / "fleet.json").read_bytes()
    result = _run("fleet", "init", str(fleet_dir), env=GOOD)
    assert result.exit_code != 0
    assert "already holds a fleet" in result.output
    assert (fleet_dir / "fleet.json").read_bytes() == before


def test_cli_init_short_passphrase_refused(tmp_path: Path) -> None:
    env = {**GOOD, "TINYWARD_CA_PASSPHRASE": "short"}
    result = _run("fleet", "init", str(tmp_path / "f"), env=env)
    assert result.exit_code == 2
    assert "at least 14 are required" in result.output
    assert not (tmp_path / "f").exists()


def test_cli_init_prompts_with_confirmation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in GOOD:
        monkeypatch.delenv(name, raising=False)
    ca, update, server = "a long enough passphrase", UPDATE_PASSPHRASE.decode(), "the third secret"
    stdin = "".join(f"{secret}\n{secret}\n" for secret in (ca, update, server))
    result = _run("fleet", "init", str(tmp_path / "f"), stdin=stdin)
    assert result.exit_code == 0, result.output
    for secret in (ca, update, server):
        assert secret not in result.output  # hidden input is never echoed
    Fleet.open(tmp_path / "f").update_signing_token(UPDATE_PASSPHRASE)
    Fleet.open(tmp_path / "f").device_ca_token(ca.encode())


def test_cli_enroll_writes_bundle_next_to_request(fleet_dir: Path, tmp_path: Path) -> None:
    request = tmp_path / "enroll.csr.pem"
    request.write_bytes(request_pem())
    result = _run("fleet", "enroll", str(fleet_dir), str(request), env=GOOD)
    assert result.exit_code == 0, result.output
    bundles = list(tmp_path.glob("*.bundle.json"))
    assert len(bundles) == 1
    bundle = DeviceBundle.from_json(bundles[0].read_bytes())
    assert bundles[0].name == f"{bundle.device_id}.bundle.json"
    assert bundle.device_id in result.output


def test_cli_enroll_output_option_and_second_enrolment_refused(
    fleet_dir: Path, tmp_path: Path
) -> None:
    request = tmp_path / "enroll.csr.pem"
    request.write_bytes(request_pem())
    out = tmp_path / "out" / "b.json"
    out.parent.mkdir()
    assert (
        _run("fleet", "enroll", str(fleet_dir), str(request), "-o", str(out), env=GOOD).exit_code
        == 0
    )
    assert json.loads(out.read_bytes())["format"] == "tinyward-device-bundle/2"  # next pin
    again = _run("fleet", "enroll", str(fleet_dir), str(request), "-o", str(out), env=GOOD)
    assert again.exit_code == 2
    assert "already enrolled" in again.output


def test_cli_enroll_wrong_passphrase_refused(fleet_dir: Path, tmp_path: Path) -> None:
    request = tmp_path / "enroll.csr.pem"
    request.write_bytes(request_pem())
    result = _run(
        "fleet", "enroll", str(fleet_dir), str(request),
        env={"TINYWARD_CA_PASSPHRASE": "not the passphrase"},
    )  # fmt: skip
    assert result.exit_code == 2
    assert "does not open" in result.output
    assert not list(tmp_path.glob("*.bundle.json"))


def test_cli_enroll_garbage_request_refused(fleet_dir: Path, tmp_path: Path) -> None:
    request = tmp_path / "enroll.csr.pem"
    request.write_bytes(b"this is not a CSR")
    result = _run("fleet", "enroll", str(fleet_dir), str(request), env=GOOD)
    assert result.exit_code == 2
    assert "not an enrolment request" in result.output


def test_cli_enroll_huge_request_refused_without_reading_it(
    fleet_dir: Path, tmp_path: Path
) -> None:
    request = tmp_path / "enroll.csr.pem"
    request.write_bytes(b"A" * 1_000_000)
    result = _run("fleet", "enroll", str(fleet_dir), str(request), env=GOOD)
    assert result.exit_code == 2
    assert "larger than 16384 bytes" in result.output


def test_cli_revoke_and_devices_table(fleet_dir: Path, tmp_path: Path) -> None:
    request = tmp_path / "enroll.csr.pem"
    device_ids = []
    for _ in range(2):
        request.write_bytes(request_pem())
        out = tmp_path / f"{len(device_ids)}.json"
        assert (
            _run(
                "fleet", "enroll", str(fleet_dir), str(request), "-o", str(out), env=GOOD
            ).exit_code
            == 0
        )
        device_ids.append(DeviceBundle.from_json(out.read_bytes()).device_id)
    result = _run("fleet", "revoke", str(fleet_dir), device_ids[0])
    assert result.exit_code == 0, result.output
    assert f"revoked device {device_ids[0]}" in result.output

    table = _run("fleet", "devices", str(fleet_dir))
    assert table.exit_code == 0
    rows = {
        line.split()[1]: line
        for line in table.output.splitlines()
        if device_ids[0][:8] in line or device_ids[1][:8] in line
    }
    assert set(rows) == set(device_ids)
    # Columns: ID, enrolled, report interval, revoked, cohort, update, versions.
    revoked = {d: [cell.strip() for cell in row.split("│")][4] for d, row in rows.items()}
    assert revoked[device_ids[1]] == "no"
    assert revoked[device_ids[0]].startswith("yes")


def test_cli_revoke_unknown_device_refused(fleet_dir: Path) -> None:
    result = _run("fleet", "revoke", str(fleet_dir), "0" * 64)
    assert result.exit_code == 2
    assert "not enrolled" in result.output


def test_cli_on_folder_that_is_not_a_fleet(tmp_path: Path) -> None:
    result = _run("fleet", "devices", str(tmp_path))
    assert result.exit_code == 2
    assert "not a tinyward fleet" in result.output


@pytest.mark.parametrize(
    "command",
    [
        "init",
        "enroll",
        "revoke",
        "devices",
        "show",
        "migrate",
        "rotate-server-key",
        "renew-server-cert",
        "rotate-device-ca",
        "retire-device-ca",
        "bundle",
        "next-server-key",
    ],
)
def test_cli_help_texts(command: str) -> None:
    result = _run("fleet", command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output.splitlines()) > 4


def test_cli_bench_fleet_prints_figures_and_baselines() -> None:
    result = _run("bench", "fleet", "--count", "2")
    assert result.exit_code == 0, result.output
    for label in ("enrolments/s", "certificate verifications/s", "bare chain signature checks/s"):
        assert label in result.output
