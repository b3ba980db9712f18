"""pin-mitm: a tinyward device's own process, pointed at an impostor, sends it nothing
(pass); a client that does not pin sends its report (fail: the control); without a
right-CA certificate the probe cannot show pinning (not-tested)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tinyward.assess.attacks.certificates import server_credentials_wrong_key
from tinyward.assess.model import load_model
from tinyward.assess.probes.base import Context
from tinyward.assess.probes.pinmitm import MitmRun, PinMitm, verdict
from tinyward.assess.run import assess
from tinyward.assess.target import make_target
from tinyward.fleet.pki import Fleet
from tinyward.trust.device import Device

PASSPHRASE = b"assess-pin-tests"
# A client that trusts any server (no CA check, no pin): what the probe must catch.
UNPINNED = (sys.executable, "-c",
            "import ssl,sys,urllib.request as u;"
            "c=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT);c.check_hostname=False;"
            "c.verify_mode=ssl.CERT_NONE;"
            "u.urlopen(u.Request(sys.argv[1]+'/v1/reports',data=b'report'),context=c,"
            "timeout=5)", "{server}")


def _ctx() -> Context:
    return Context(load_model())


def test_pin_verdicts() -> None:
    other = MitmRun("other CA", 1, 0, 0)
    wrong = MitmRun("right CA, wrong key", 1, 1, 0)
    assert verdict([other, wrong], _ctx())[0].verdict == "pass"
    (only_other,) = verdict([other], _ctx())
    assert only_other.verdict == "not-tested" and "--mitm-cert" in only_other.text
    assert verdict([other, MitmRun("right CA, wrong key", 0, 0, 0)], _ctx())[0].verdict == \
        "not-tested"
    leaked = verdict([other, MitmRun("right CA, wrong key", 1, 1, 300)], _ctx())[0]
    assert leaked.verdict == "fail" and "300 bytes" in leaked.text


@pytest.fixture(name="device")
def _device(tmp_path: Path) -> tuple[Device, Path]:
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE)
    device = Device.init(tmp_path / "device")
    device.install(fleet.enroll(device.enrolment_request, PASSPHRASE))
    wrong = server_credentials_wrong_key(tmp_path / "mitm", fleet.directory, PASSPHRASE)
    return device, *wrong  # type: ignore[return-value]


@pytest.mark.slow
def test_a_tinyward_device_refuses_both_impostors(device) -> None:
    dev, cert, key = device
    command = (sys.executable, "-m", "tinyward", "device", "run", str(dev.directory),
               "--server", "{server}", "--interval", "0.5", "--duration", "2",
               "--backoff-max", "0.5")
    result = assess(make_target(device_command=command, mitm_cert=(cert, key)),
                    probes=[PinMitm()])
    evidence = result.verdicts["I-PIN-1"]
    assert evidence.verdict == "pass", evidence.text
    assert "other CA: refused" in evidence.text
    assert "right CA, wrong key: refused" in evidence.text
    # The wrong-key impostor's chain is good: the device completed handshakes, then the
    # pin refused the key before a byte of the report left.
    assert "0 handshake(s)" not in evidence.text.split("right CA, wrong key")[1]


def test_control_a_client_without_a_pin_fails(device) -> None:
    _, cert, key = device
    result = assess(make_target(device_command=UNPINNED, mitm_cert=(cert, key)),
                    probes=[PinMitm()])
    evidence = result.verdicts["I-PIN-1"]
    assert evidence.verdict == "fail", evidence.text
    assert "other CA" in evidence.text and "bytes to the impostor" in evidence.text


def test_a_command_without_the_server_placeholder_is_refused() -> None:
    with pytest.raises(Exception, match="server"):
        make_target(device_command=("true",))
