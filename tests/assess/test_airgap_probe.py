"""air-gapped: a tinyward device signs its air-gapped mode, and its local readout locks out
a brute force across a restart.

Real parts: an enrolled device (`Device.init` + a fleet), `tinyward device run --air-gapped
--attest-nonce` as a process, `tinyward device readout` as a process fed codes on stdin.
Controls that fail: a device that only offers its connected mode (its token says
"connected"); the real readout enrolled with a policy that never locks out within the
probe's guesses; a readout that unlocks for any code; one whose lockout lives in memory
(tests/assess/fakereadout.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tinyward.assess.model import load_model
from tinyward.assess.probes.airgap import AirGapped, Mode, Readout, classify, verdict
from tinyward.assess.probes.base import Budget, Context
from tinyward.assess.target import make_target
from tinyward.fleet.pki import Fleet
from tinyward.trust.device import Device
from tinyward.trust.lockout import LockoutPolicy
from tinyward.trust.readout import ReadoutGate

pytestmark = pytest.mark.slow
PASSPHRASE = b"assessment air-gap test"


@pytest.fixture
def device_dir(tmp_path: Path) -> Path:
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE)
    device = Device.init(tmp_path / "device")
    device.install(fleet.enroll(device.enrolment_request, PASSPHRASE))
    ReadoutGate(device.storage, "test").enrol_pin("481516")
    return tmp_path / "device"


def tinyward(*argv: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "tinyward", *argv)


def air_gapped_run(device_dir: Path) -> tuple[str, ...]:
    return tinyward("device", "run", str(device_dir), "--air-gapped", "--duration", "1",
                    "--attest-nonce", "{nonce}", "--attest-out", "{out}")


def probe(device_dir: Path, airgap: tuple[str, ...] | None,
          readout: tuple[str, ...] | None) -> tuple[str, str]:
    target = make_target(device_dir=device_dir, airgap_command=airgap,
                         readout_command=readout)
    (evidence,) = AirGapped().run(target, Context(load_model()), Budget(120, 200))
    assert evidence.requirement == "C-AIRGAP-1"
    return evidence.verdict, evidence.text


def test_air_gapped_verdicts() -> None:
    context = Context(load_model())
    good_mode, good_readout = Mode("valid", "air-gapped"), Readout("lockout-held", 5)

    def one(mode: Mode | None, readout: Readout | None) -> str:
        return verdict(mode, readout, context)[0].verdict

    assert one(good_mode, good_readout) == "pass"
    assert one(Mode("valid", "connected"), good_readout) == "fail"
    assert one(Mode("refused", detail="NonceMismatch"), good_readout) == "fail"
    for bad in ("accepted", "no-lockout", "reset-by-restart"):
        assert one(good_mode, Readout(bad, 8)) == "fail"
    assert one(good_mode, None) == "not-tested"
    assert one(None, good_readout) == "not-tested"
    assert one(Mode("no token", detail="exit 1"), good_readout) == "not-tested"
    assert one(good_mode, Readout("unreadable")) == "not-tested"
    assert classify("wrong code\ncode> ") == "wrong"
    assert classify("locked\nlocked out: next code checked in 60 s\nwrong code") == "lockout"
    assert classify("unlocked") == "accepted" and classify("locked") == "unreadable"


def test_a_tinyward_device_signs_its_air_gapped_mode_and_its_readout_locks_out(
        device_dir: Path) -> None:
    verdict_, text = probe(device_dir, air_gapped_run(device_dir),
                           tinyward("device", "readout", str(device_dir)))
    assert verdict_ == "pass", text
    assert "says 'air-gapped'" in text and "air gap: seccomp network filter" in text, text
    assert "locked out after 5 wrong codes" in text, text  # tinyward's policy: 5 free


def test_unsafe_control_a_device_that_only_runs_connected_fails(device_dir: Path) -> None:
    # `device attest` on a device provisioned connected signs in a process with network:
    # its token truthfully says "connected".
    attest = tinyward("device", "attest", str(device_dir), "--nonce", "{nonce}", "-o", "{out}")
    verdict_, text = probe(device_dir, attest, None)
    assert verdict_ == "fail" and "'connected'" in text, text


def test_unsafe_control_a_readout_without_lockout_fails(device_dir: Path) -> None:
    # The real readout, enrolled with a policy that allows 100 free guesses.
    device = Device.open(device_dir)
    ReadoutGate(device.storage, "test").enrol_pin("481516", LockoutPolicy(free_attempts=100))
    verdict_, text = probe(device_dir, air_gapped_run(device_dir),
                           tinyward("device", "readout", str(device_dir)))
    assert verdict_ == "fail" and "no brute-force lockout" in text, text


@pytest.mark.parametrize(("kind", "says"), [("open", "does not authenticate"),
                                            ("memory", "does not survive a restart")])
def test_unsafe_control_readouts_without_auth_or_with_a_lockout_in_memory_fail(
        device_dir: Path, kind: str, says: str) -> None:
    readout = (sys.executable, "-m", "tests.assess.fakereadout", kind)
    verdict_, text = probe(device_dir, air_gapped_run(device_dir), readout)
    assert verdict_ == "fail" and says in text, text


def test_an_air_gap_command_without_its_placeholders_is_refused_in_one_error_line(
        tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tinyward.cli.main import cli

    result = CliRunner().invoke(cli, ["assess", "run", str(tmp_path), "--out",
                                      str(tmp_path / "out"), "--airgap-command",
                                      "tinyward device attest DIR"])
    assert result.exit_code != 0
    assert "error: the air-gap command must contain {nonce} and {out}" in result.output, \
        result.output
    assert not (tmp_path / "out").exists()


def test_a_second_device_runs_air_gapped_with_its_own_certificate_named(
        device_dir: Path, tmp_path: Path) -> None:
    # The device under test keeps running connected; a second device of the same fleet
    # shows the mode. Its token verifies only with its own certificate.
    second = Device.init(tmp_path / "second")
    second.install(Fleet.open(tmp_path / "fleet").enroll(second.enrolment_request,
                                                         PASSPHRASE))
    cert = tmp_path / "second" / "certs" / "attestation.crt.pem"
    target = make_target(device_dir=device_dir, airgap_command=air_gapped_run(second.directory),
                         airgap_cert=cert)
    (named,) = AirGapped().run(target, Context(load_model()), Budget(120, 200))
    assert named.verdict == "not-tested" and "says 'air-gapped'" in named.text, named.text
    mixed = make_target(device_dir=device_dir, airgap_command=air_gapped_run(second.directory))
    (other,) = AirGapped().run(mixed, Context(load_model()), Budget(120, 200))
    assert other.verdict == "fail" and "was refused" in other.text, other.text
