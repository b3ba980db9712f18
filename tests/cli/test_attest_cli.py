"""End to end through the CLI: fleet init → device provision → device attest → attest verify."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.fleet.helpers import CLI_SECRETS
from tinyward.cli.main import cli


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("attest")
    runner = CliRunner(env=CLI_SECRETS)
    for args in (["fleet", "init", str(base / "fleet")], ["fleet", "init", str(base / "other")],
                 ["device", "provision", str(base / "dev"), "--fleet", str(base / "fleet"),
                  "--readout", "none"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    nonce = os.urandom(32).hex()
    result = runner.invoke(cli, ["device", "attest", str(base / "dev"), "--nonce", nonce,
                                 "-o", str(base / "token.cbor")])
    assert result.exit_code == 0, result.output
    return {"base": base, "runner": runner, "nonce": nonce}


def verify(world: dict[str, object], token: Path, fleet: str = "fleet", nonce: str | None = None):
    base = world["base"]
    runner: CliRunner = world["runner"]  # type: ignore[assignment]
    return runner.invoke(cli, ["attest", "verify", str(token), "--fleet", str(base / fleet),  # type: ignore[operator]
                               "--nonce", nonce or str(world["nonce"])])


def test_valid_token_verifies_and_prints_claims(world: dict[str, object]) -> None:
    result = verify(world, world["base"] / "token.cbor")  # type: ignore[operator]
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["valid"] is True and data["claims"]["nonce"] == world["nonce"]
    assert data["claims"]["security_lifecycle_state"] == "secured"


def test_every_flipped_byte_is_refused(world: dict[str, object], tmp_path: Path) -> None:
    token = (world["base"] / "token.cbor").read_bytes()  # type: ignore[operator]
    bad = tmp_path / "bad.cbor"
    for i in range(len(token)):
        tampered = bytearray(token)
        tampered[i] ^= 0x01
        bad.write_bytes(bytes(tampered))
        result = verify(world, bad)
        assert result.exit_code != 0, f"flipped byte {i} was accepted"
        assert "token refused:" in result.output


def test_wrong_nonce_names_the_reason(world: dict[str, object]) -> None:
    result = verify(world, world["base"] / "token.cbor", nonce=os.urandom(32).hex())  # type: ignore[operator]
    assert result.exit_code != 0 and "another nonce" in result.output


def test_other_fleet_names_the_reason(world: dict[str, object]) -> None:
    result = verify(world, world["base"] / "token.cbor", fleet="other")  # type: ignore[operator]
    assert result.exit_code != 0 and "not enrolled in fleet" in result.output


@pytest.mark.parametrize("content, reason", [(b"", "empty"), (b"hello\n", "not valid CBOR")])
def test_non_tokens_refused(
    world: dict[str, object], tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "t"
    path.write_bytes(content)
    result = verify(world, path)
    assert result.exit_code != 0 and reason in result.output


def test_truncated_token_refused(world: dict[str, object], tmp_path: Path) -> None:
    token = (world["base"] / "token.cbor").read_bytes()  # type: ignore[operator]
    path = tmp_path / "t"
    for keep in (1, 20, len(token) // 2, len(token) - 1):
        path.write_bytes(token[:keep])
        result = verify(world, path)
        assert result.exit_code != 0 and "token refused" in result.output


def test_revoked_device_refused(tmp_path: Path) -> None:
    runner = CliRunner(env=CLI_SECRETS)
    assert runner.invoke(cli, ["fleet", "init", str(tmp_path / "f")]).exit_code == 0
    assert runner.invoke(cli, ["device", "provision", str(tmp_path / "d"), "--fleet",
                               str(tmp_path / "f"), "--readout", "none"]).exit_code == 0
    device_id = json.loads((tmp_path / "d" / "device.json").read_text())["device_id"]
    nonce = os.urandom(48).hex()
    runner.invoke(
        cli, ["device", "attest", str(tmp_path / "d"), "--nonce", nonce, "-o", str(tmp_path / "t")]
    )
    assert runner.invoke(cli, ["fleet", "revoke", str(tmp_path / "f"), device_id]).exit_code == 0
    result = runner.invoke(
        cli,
        ["attest", "verify", str(tmp_path / "t"), "--fleet", str(tmp_path / "f"), "--nonce", nonce],
    )
    assert result.exit_code != 0 and "revoked" in result.output


def test_provisioning_twice_refused(tmp_path: Path) -> None:
    runner = CliRunner(env=CLI_SECRETS)
    runner.invoke(cli, ["fleet", "init", str(tmp_path / "f")])
    args = [
        "device",
        "provision",
        str(tmp_path / "d"),
        "--fleet",
        str(tmp_path / "f"),
        "--readout",
        "none",
    ]
    assert runner.invoke(cli, args).exit_code == 0
    second = runner.invoke(cli, args)
    # A second provision resumes an unfinished one (tests/cli/test_everyday_mistakes.py);
    # a finished one is refused as a state error, its keys untouched.
    assert second.exit_code == 4 and "already provisioned" in second.output


def test_install_same_bundle_twice_refused(tmp_path: Path) -> None:
    runner = CliRunner(env=CLI_SECRETS)
    runner.invoke(cli, ["fleet", "init", str(tmp_path / "f")])
    runner.invoke(cli, ["device", "init", str(tmp_path / "d")])
    enrol = runner.invoke(cli, ["fleet", "enroll", str(tmp_path / "f"),
                                str(tmp_path / "d" / "enroll.csr.pem"),
                                "-o", str(tmp_path / "b.json")])
    assert enrol.exit_code == 0, enrol.output
    assert (
        runner.invoke(
            cli, ["device", "install", str(tmp_path / "d"), str(tmp_path / "b.json")]
        ).exit_code
        == 0
    )
    again = runner.invoke(cli, ["device", "install", str(tmp_path / "d"), str(tmp_path / "b.json")])
    assert again.exit_code != 0 and "already provisioned" in again.output


def test_bundle_for_another_device_refused(tmp_path: Path) -> None:
    runner = CliRunner(env=CLI_SECRETS)
    runner.invoke(cli, ["fleet", "init", str(tmp_path / "f")])
    runner.invoke(cli, ["device", "init", str(tmp_path / "a")])
    runner.invoke(cli, ["device", "init", str(tmp_path / "b")])
    runner.invoke(cli, ["fleet", "enroll", str(tmp_path / "f"),
                        str(tmp_path / "a" / "enroll.csr.pem"), "-o", str(tmp_path / "a.json")])
    result = runner.invoke(
        cli, ["device", "install", str(tmp_path / "b"), str(tmp_path / "a.json")]
    )
    assert result.exit_code != 0 and "the bundle is for device" in result.output
