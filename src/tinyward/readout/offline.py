"""The device side of offline reports: number and sign a report for the QR code.

The carrier (``TW1:`` + base64url) is :mod:`tinyward.readout.carrier`; the fleet side,
verifying a scanned report and recording it, is :mod:`tinyward.fleet.offline`. This module
imports no fleet code, so the air-gapped readout loads no CA or SQLite code.

Sequence numbers come from the same counter as connected reports
(:class:`tinyward.link.queue.ReportQueue`), so a fleet sees one strictly increasing series
per device, whichever way a report arrived; the fleet refuses a number it already holds
(:func:`tinyward.trust.replay.is_replay`), which is what makes a replayed QR code fail.
"""

from __future__ import annotations

import time

from tinyward.link.queue import ReportQueue
from tinyward.readout.carrier import (
    MAX_TEXT_CHARS,
    OFFLINE_REPORT_SIZE,
    TEXT_PREFIX,
    BadOfflineText,
    from_text,
    to_text,
)
from tinyward.readout.state import DisplayState, stated_mode
from tinyward.trust.device import Device
from tinyward.trust.report import Report, encode_report

__all__ = ["MAX_TEXT_CHARS", "OFFLINE_REPORT_SIZE", "TEXT_PREFIX", "BadOfflineText",
           "from_text", "make_offline_report", "to_text"]


def make_offline_report(device: Device, state: DisplayState, now: float | None = None) -> bytes:
    """Number and sign a report of ``state`` for the QR code (the sequence number is
    committed first, so it is never reused even if the process dies right after)."""
    # Atomic across processes (the runner, other readout sessions): never one number twice.
    reservation = ReportQueue.reserve_offline(device.storage)
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
