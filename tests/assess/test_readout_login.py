"""A tinyward device's local readout is a login: the credentials probe tries well-known PINs
through the device's own gate (I-CRED-1), the lockout probe locks it and opens the device
again from its folder (I-AUTH-1). Controls: a vendor default PIN fails I-CRED-1; a gate
whose count is lost on reopening fails I-AUTH-1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyward.assess.probes import readout
from tinyward.assess.probes.credentials import Credentials
from tinyward.assess.probes.lockout import LockoutRestart
from tinyward.assess.run import assess
from tinyward.assess.target import make_target
from tinyward.trust.device import Device
from tinyward.trust.readout import ReadoutGate


@pytest.fixture(name="device")
def _device(tmp_path: Path) -> Device:
    return Device.init(tmp_path / "device")


def test_readout_verdicts() -> None:
    where = "d"
    assert readout.defaults_evidence(readout.DefaultsTried(4), where).verdict == "pass"
    bad = readout.defaults_evidence(readout.DefaultsTried(2, "12345678"), where)
    assert bad.verdict == "fail" and "'12345678'" in bad.text
    assert readout.defaults_evidence(readout.DefaultsTried(0), where) is None
    assert readout.lockout_evidence(readout.LockoutSeen(5, True, True), where).verdict == "pass"
    assert readout.lockout_evidence(readout.LockoutSeen(5, True, False), where).verdict == "fail"
    assert readout.lockout_evidence(readout.LockoutSeen(12, False), where).verdict == "fail"
    assert readout.lockout_evidence(readout.LockoutSeen(5, True), where).verdict == "not-tested"


def test_a_device_unique_pin_passes_and_locks_across_a_reopening(device: Device) -> None:
    ReadoutGate(device.storage, "d").enrol_pin()  # random 8 digits, this device's own
    result = assess(make_target(device_dir=device.directory),
                    probes=[Credentials(), LockoutRestart()])
    cred = result.verdicts["I-CRED-1"]
    # No address: the network part is not-tested, and not-tested beats the readout's pass.
    assert cred.verdict == "not-tested"
    auth = result.verdicts["I-AUTH-1"]
    assert auth.verdict == "pass", auth.text
    assert "still locked" in auth.text


def test_control_a_vendor_default_pin_fails_i_cred_1(device: Device) -> None:
    ReadoutGate(device.storage, "d").enrol_pin("12345678")  # the same on every unit
    result = assess(make_target(device_dir=device.directory), probes=[Credentials()])
    evidence = result.verdicts["I-CRED-1"]
    assert evidence.verdict == "fail", evidence.text
    assert "'12345678'" in evidence.text
    # The owner was never locked out by the check.
    assert ReadoutGate(device.storage, "d").status().wait_seconds == 0


def test_control_a_count_lost_on_restart_fails_i_auth_1(device: Device,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ReadoutGate(device.storage, "d").enrol_pin()
    real = readout._gate

    calls = []

    def forgetful(folder: Path):  # type: ignore[no-untyped-def]
        gate = real(folder)
        calls.append(folder)
        if len(calls) > 2:  # the reopening: a device that keeps its count in memory
            from tinyward.trust.lockout import LockoutState

            gate._storage.write("readout.lockout", LockoutState().to_cbor())
        return gate

    monkeypatch.setattr(readout, "_gate", forgetful)
    evidence = assess(make_target(device_dir=device.directory),
                      probes=[LockoutRestart()]).verdicts["I-AUTH-1"]
    assert evidence.verdict == "fail", evidence.text
    assert "after a restart" in evidence.text
