"""Signed reports carried out of an air-gapped device by QR code, verified offline.

The report is the very format connected devices send (:mod:`tinyward.trust.report`:
COSE_Sign1, ES256 by the device's report key, numbered, fixed size), so a fleet treats both
alike. Only the carrier differs: the bytes are written as text for a QR code,

    ``TW1:`` + base64url (RFC 4648 §5, no padding) of the report

which any QR reader returns unchanged and a person can paste. The report is
:data:`OFFLINE_REPORT_SIZE` bytes, small enough for a QR code a phone reads off a screen.

Sequence numbers come from the same counter as connected reports
(:class:`tinyward.link.queue.ReportQueue`), so a fleet sees one strictly increasing series
per device, whichever way a report arrived; the fleet's report store refuses a number it
has already stored, which is what makes a replayed QR code fail.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from datetime import datetime

from tinyward.errors import BadInput
from tinyward.fleet.errors import RevokedDevice, UnknownDevice
from tinyward.fleet.pki import Fleet
from tinyward.fleet.store import ReportStore
from tinyward.link.queue import ReportQueue
from tinyward.readout.state import DisplayState, stated_mode
from tinyward.trust.device import Device
from tinyward.trust.report import Report, encode_report, peek_device_id, verify_report

OFFLINE_REPORT_SIZE = 512
TEXT_PREFIX = "TW1:"
MAX_TEXT_CHARS = 4096
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class BadOfflineText(BadInput):
    """The text is not a tinyward offline report (wrong prefix, characters or length)."""


class ReplayedReport(BadInput):
    """The fleet already holds this report's sequence number for the device: a replay."""


def make_offline_report(device: Device, state: DisplayState, now: float | None = None) -> bytes:
    """Number and sign a report of ``state`` for the QR code (the sequence number is
    committed first, so it is never reused even if the process dies right after)."""
    reservation = ReportQueue(device.storage).reserve()
    incidents = dict(state.incidents)
    if reservation.dropped_reports:
        incidents["dropped_reports"] = reservation.dropped_reports
    report = Report(
        device_id=device.device_id,
        seq=reservation.seq,
        timestamp=int(time.time() if now is None else now),
        # What was enforced when these results were made, recorded by that process; never
        # the provisioned mode, nor this readout's own filter.
        mode=stated_mode(device.directory, state),
        results=tuple(state.results[-4:]),
        incidents=incidents,
        health=state.health,
    )
    return encode_report(report, device.signer("report"), size=OFFLINE_REPORT_SIZE)


def to_text(report: bytes) -> str:
    """The QR text of a signed report."""
    return TEXT_PREFIX + base64.urlsafe_b64encode(report).rstrip(b"=").decode("ascii")


def from_text(text: str) -> bytes:
    """Parse QR text back to report bytes. White space (line wrapping) is ignored.

    Raises :class:`BadOfflineText` with the reason.
    """
    if len(text) > MAX_TEXT_CHARS:
        raise BadOfflineText(f"the text is {len(text)} characters; an offline report is far shorter")
    compact = "".join(text.split())
    if not compact.startswith(TEXT_PREFIX):
        raise BadOfflineText(f"an offline report starts with {TEXT_PREFIX!r}; this text does not")
    body = compact[len(TEXT_PREFIX):]
    if not _BASE64URL.fullmatch(body):
        raise BadOfflineText("the report text holds characters outside base64url (A-Z a-z 0-9 - _)")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise BadOfflineText("the report text is not valid base64url (cut short?)") from None


def verify_offline(
    fleet: Fleet, data: bytes, store: ReportStore, now: datetime | None = None
) -> Report:
    """Verify an offline report against ``fleet`` and record it in ``store``.

    Raises the report codec's errors (malformed, bad signature, wrong size, bad padding),
    :class:`UnknownDevice` (e.g. a report from another fleet), :class:`RevokedDevice`,
    certificate errors, or :class:`ReplayedReport`. Nothing is stored unless it verifies.
    """
    device_id = peek_device_id(data)
    try:
        enrolled = fleet.device(device_id)
    except UnknownDevice:
        raise UnknownDevice(
            f"the report claims device {device_id[:16]}…, which is not enrolled in fleet "
            f"{fleet.fleet_id}: a report from another fleet, or forged"
        ) from None
    if enrolled.revoked:
        raise RevokedDevice(f"device {device_id[:16]}… has been revoked in this fleet")
    fleet.verify_device_certificate(enrolled.certificates["report"], "report", now)
    report = verify_report(data, enrolled.public_key("report"), size=OFFLINE_REPORT_SIZE)
    last = store.last_seq(device_id)
    if report.seq <= last:
        raise ReplayedReport(
            f"report {report.seq} of device {device_id[:16]}… is not newer than the last one "
            f"the fleet holds ({last}): a replay or a duplicate, not stored"
        )
    store.append(device_id, [(report, data)], received_at=int(time.time()))
    return report
