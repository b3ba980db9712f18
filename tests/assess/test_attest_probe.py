"""attestation: fresh nonces to a real tinyward device (`tinyward device attest` as a
process), each token verified against the device's attestation certificate.

Control: a device that answers every challenge with the same saved token (made for an
old nonce: a replay) fails, and so does a token from another device's key.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tinyward.assess.model import load_model
from tinyward.assess.probes.attest import Answer, Attestation, verdict
from tinyward.assess.probes.base import Budget, Context
from tinyward.assess.target import make_target
from tinyward.fleet.pki import Fleet
from tinyward.trust.device import Device

PASSPHRASE = b"assessment attestation test"


@pytest.fixture(scope="module")
def devices(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("attest")
    fleet = Fleet.init(base / "fleet", PASSPHRASE)
    for name in ("one", "two"):
        device = Device.init(base / name)
        device.install(fleet.enroll(device.enrolment_request, PASSPHRASE))
    return base / "one", base / "two"


def attest_command(device_dir: Path) -> tuple[str, ...]:
    return (sys.executable, "-m", "tinyward", "device", "attest", str(device_dir),
            "--nonce", "{nonce}", "-o", "{out}")


def probe(device_dir: Path, command: tuple[str, ...]) -> tuple[str, str]:
    target = make_target(device_dir=device_dir, attest_command=command)
    evidence = Attestation().run(target, Context(load_model()), Budget(120, 10))
    assert [e.requirement for e in evidence] == ["I-ATTEST-1"]
    return evidence[0].verdict, evidence[0].text


def test_attestation_verdicts() -> None:
    context = Context(load_model())
    good = Answer("valid", "2 software component(s)", 2)
    assert verdict([good, good], "c", context)[0].verdict == "pass"
    assert verdict([good, Answer("refused", "NonceMismatch")], "c", context)[0].verdict == "fail"
    assert verdict([Answer("valid", "0", 0)], "c", context)[0].verdict == "fail"
    assert verdict([good, Answer("no token", "exit 1")], "c", context)[0].verdict == \
        "not-tested"
    assert verdict([], "c", context)[0].verdict == "not-tested"


def test_a_tinyward_device_answers_fresh_nonces_with_valid_tokens(
        devices: tuple[Path, Path]) -> None:
    verdict_, text = probe(devices[0], attest_command(devices[0]))
    assert verdict_ == "pass", text
    assert "issued by device-ca.crt.pem" in text and "software component" in text


def test_control_a_replayed_token_for_an_old_nonce_fails(devices: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    saved = tmp_path / "old-token.cbor"
    argv = [p.replace("{nonce}", "ab" * 32).replace("{out}", str(saved))
            for p in attest_command(devices[0])]
    assert subprocess.run(argv, check=False, timeout=60).returncode == 0
    replay = (sys.executable, "-c", "import shutil,sys; shutil.copy(sys.argv[1], sys.argv[2])",
              str(saved), "{out}", "{nonce}")
    verdict_, text = probe(devices[0], replay)
    assert verdict_ == "fail" and "NonceMismatch" in text, text


def test_control_a_token_from_another_device_fails(devices: tuple[Path, Path]) -> None:
    verdict_, text = probe(devices[0], attest_command(devices[1]))
    assert verdict_ == "fail" and "BadTokenSignature" in text, text


def test_without_an_attest_command_it_is_not_tested(devices: tuple[Path, Path]) -> None:
    evidence = Attestation().run(make_target(device_dir=devices[0]), Context(load_model()),
                                 Budget(10, 5))
    assert evidence[0].verdict == "not-tested" and "--attest-command" in evidence[0].text


def test_cli_assesses_a_device_folder_with_its_attest_command(devices: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    import json
    import shlex

    from click.testing import CliRunner

    from tinyward.cli.main import cli

    command = shlex.join(attest_command(devices[0]))
    result = CliRunner().invoke(cli, ["assess", "run", str(devices[0]), "--attest-command",
                                      command, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    verdicts = {r["id"]: r["verdict"] for r in document["requirements"]}
    assert verdicts["I-ATTEST-1"] == "pass"
    assert verdicts["I-AUTH-1"] == "not-tested" and verdicts["C-TRAFFIC-1"] == "not-tested"
    # A command without its placeholders is refused before any probe runs.
    refused = CliRunner().invoke(cli, ["assess", "run", str(devices[0]), "--attest-command",
                                       "true", "--out", str(tmp_path / "out2")])
    assert refused.exit_code != 0 and "{nonce} and {out}" in refused.output
