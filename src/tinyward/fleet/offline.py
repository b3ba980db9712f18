"""The fleet side of offline reports: verify a report scanned from a readout's QR code.

The device side (signing, the ``TW1:`` text) lives in :mod:`tinyward.readout`; this module
checks a report against the fleet's enrolment records and certificates, applies the same
replay rule as the connected ingest (:func:`tinyward.trust.replay.is_replay`), and records
it in the fleet's report store.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from tinyward.errors import BadInput
from tinyward.fleet.errors import RevokedDevice, UnknownDevice
from tinyward.fleet.ingest import clock_skew
from tinyward.fleet.pki import Fleet
from tinyward.fleet.store import ReportStore
from tinyward.readout.carrier import OFFLINE_REPORT_SIZE
from tinyward.trust.replay import is_replay
from tinyward.trust.report import Report, peek_device_id, verify_report

__all__ = ["ReplayedReport", "ReportClockSkew", "verify_offline"]


class ReplayedReport(BadInput):
    """The fleet already holds this report's sequence number for the device: a replay."""


class ReportClockSkew(BadInput):
    """The report is dated outside the fleet's clock window (the connected path's rule)."""


def verify_offline(
    fleet: Fleet, data: bytes, store: ReportStore, now: datetime | None = None,
    *, allow_old: bool = False,
) -> Report:
    """Verify an offline report against ``fleet`` at ``now`` (default: the present) and
    record it in ``store``.

    Raises the report codec's errors (malformed, bad signature, wrong size, bad padding),
    :class:`UnknownDevice` (e.g. a report from another fleet), :class:`RevokedDevice`,
    certificate errors, :class:`ReplayedReport`, or :class:`ReportClockSkew` (dated outside
    the window connected reports get; ``allow_old`` lifts its age limit only). Nothing is
    stored unless it verifies.
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
    at = int((now or datetime.now(UTC)).timestamp())
    skew = clock_skew(report.timestamp, at, allow_old=allow_old)
    if skew is not None:
        hint = "--at TIME" if report.timestamp > at else "--allow-old or --at TIME"
        raise ReportClockSkew(f"{skew} (to check it as at another time: {hint})")
    last = store.last_seq(device_id)
    if is_replay(report.seq, last):
        raise ReplayedReport(
            f"report {report.seq} of device {device_id[:16]}… is not newer than the last one "
            f"the fleet holds ({last}): a replay or a duplicate, not stored"
        )
    store.append(device_id, [(report, data)], received_at=int(time.time()))
    return report
