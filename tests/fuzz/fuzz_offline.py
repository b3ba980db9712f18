"""atheris harness: offline (QR) reports — :func:`tinyward.readout.offline.from_text`,
then :func:`~tinyward.fleet.offline.verify_offline` against a real fleet.

At start-up the harness makes, under :func:`~tests.fuzz.harness.workdir`, a fleet with
one enrolled device, one enrolled then revoked, and one never enrolled, and signs offline
reports 1 to 4 on each. The report store is a stub whose last stored sequence number is
2 and which stores nothing, so the outcome of an input never depends on earlier inputs.

The first input byte chooses what the rest is: even — the QR text (decoded from UTF-8,
undecodable bytes kept as surrogates); odd — the report bytes, skipping the text layer.

Documented outcomes: a verified :class:`~tinyward.trust.report.Report` newer than the
stored one, or :class:`BadOfflineText`, a :class:`~tinyward.trust.report.ReportError`,
:class:`UnknownDevice`, :class:`RevokedDevice`, a :class:`BadCertificate`, or
:class:`ReplayedReport`, or :class:`ReportClockSkew` (a report dated outside the clock
window; the seed reports are inside it). Anything else is a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from tests.fuzz.harness import instrumented, run, workdir

with instrumented(__name__):
    from tinyward.fleet.errors import BadCertificate, RevokedDevice, UnknownDevice
    from tinyward.fleet.offline import ReplayedReport, ReportClockSkew, verify_offline
    from tinyward.fleet.pki import Fleet
    from tinyward.readout.offline import (
        BadOfflineText,
        from_text,
        make_offline_report,
        to_text,
    )
    from tinyward.readout.state import DisplayState
    from tinyward.trust.device import Device
    from tinyward.trust.report import Report, ReportError

ALLOWED = (BadOfflineText, ReportError, UnknownDevice, RevokedDevice, BadCertificate,
           ReplayedReport, ReportClockSkew)
PASSPHRASE = b"correct horse battery staple"
LAST_STORED = 2
NOW = datetime.now(UTC)  # certificates are issued at start-up, valid for years


class _StubStore:
    """The part of :class:`~tinyward.fleet.store.ReportStore` verify_offline uses."""

    def last_seq(self, device_id: str) -> int:
        return LAST_STORED

    def append(self, device_id: str, reports: Sequence[tuple[Report, bytes]],
               received_at: int) -> int:
        return max(report.seq for report, _ in reports)


STORE = _StubStore()
_DIR = workdir("offline")
FLEET = Fleet.init(_DIR / "fleet", PASSPHRASE)
DEVICES = {name: Device.init(_DIR / name) for name in ("good", "revoked", "stranger")}
for _name in ("good", "revoked"):
    DEVICES[_name].install(FLEET.enroll(DEVICES[_name].enrolment_request, PASSPHRASE))
FLEET.revoke(DEVICES["revoked"].device_id)
_MADE = int(NOW.timestamp()) - 3600  # inside the clock window, so seeds reach the end
STATE = DisplayState(updated_at=_MADE, results=({"label": "cat", "p": 0.5},),
                     incidents={"port_scan": 1}, health="degraded")
REPORTS = {name: [make_offline_report(device, STATE, now=_MADE + seq)
                  for seq in range(1, 5)] for name, device in DEVICES.items()}


def TestOneInput(data: bytes) -> None:  # the name atheris and OSS-Fuzz use
    if not data:
        return
    body = data[1:]
    try:
        report_bytes = from_text(body.decode("utf-8", "surrogateescape")) if data[0] % 2 == 0 \
            else body
        report = verify_offline(FLEET, report_bytes, STORE, now=NOW)
    except ALLOWED:
        return
    assert report.device_id == DEVICES["good"].device_id, "a report of another device passed"
    assert report.seq > LAST_STORED, "a replayed report passed"


def seeds() -> list[bytes]:
    out: list[bytes] = []
    for reports in REPORTS.values():
        for report in reports:
            out.append(b"\x00" + to_text(report).encode("ascii"))
            out.append(b"\x01" + report)
    text = to_text(REPORTS["good"][-1])
    out.append(b"\x00" + "\n".join(text[i : i + 40] for i in range(0, len(text), 40)).encode())
    return out


if __name__ == "__main__":
    run(TestOneInput, seeds)
