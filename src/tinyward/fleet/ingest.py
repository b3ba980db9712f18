"""Whether the fleet accepts one report: the ingest decision (pure, no I/O).

The server does the I/O (TLS, HTTP, the database) and hands this module bytes, the device
ID its TLS layer verified, a directory to look keys up in, the last sequence number the
store holds for that device and the current time. It answers :class:`Accept` with the
verified report, or :class:`Reject` with the HTTP status, a short machine-readable
``code`` and a reason a person can act on. One rule per attack:

===================  ======  ================================================================
code                 status  attack or fault
===================  ======  ================================================================
``unknown_device``   403     the TLS identity is not enrolled in this fleet
``revoked``          403     the device was revoked (``tinyward fleet revoke``)
``malformed``        400     not CBOR / not COSE_Sign1 / wrong algorithm / schema broken
``signer_mismatch``  403     device A posts a report that names device B (``kid``)
``bad_signature``    403     the signature does not verify with the device's report key
``bad_size``         400     not exactly the fleet's report size
``bad_padding``      400     the padding is not zero bytes
``replay``           409     ``seq`` ≤ the last stored: replay, duplicate or out of order
``clock_skew``       422     the timestamp is too far in the future or the past
===================  ======  ================================================================

A ``replay`` reject carries ``stored_seq``: a device whose acknowledgement was lost (server
crash after commit) learns that its report is already stored and drops it from its queue,
which is what makes store-and-forward delivery exactly-once.

The timestamp window is asymmetric on purpose: reports wait in the device's queue while the
server is unreachable, so old is normal (up to ``max_age_seconds``), but a report from the
future means a clock that is wrong (``max_future_seconds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.trust import report as codec
from tinyward.trust.replay import is_replay


class DeviceDirectory(Protocol):
    """What ingest needs to know about enrolled devices (the fleet PKI implements it)."""

    def report_key(self, device_id: str) -> ec.EllipticCurvePublicKey | None:
        """The device's report public key, or None if no such device is enrolled."""
        ...

    def is_revoked(self, device_id: str) -> bool:
        """True if the device has been revoked."""
        ...


@dataclass(frozen=True)
class IngestPolicy:
    """The fleet's rules for reports (safe defaults)."""

    size: int = codec.DEFAULT_SIZE
    max_future_seconds: int = 300
    max_age_seconds: int = 30 * 24 * 3600
    limits: codec.ReportLimits = codec.DEFAULT_LIMITS


@dataclass(frozen=True)
class Accept:
    """The report is authentic, in order and well-formed: store it."""

    report: codec.Report
    raw: bytes


@dataclass(frozen=True)
class Reject:
    """The report is refused; nothing may be stored."""

    status: int
    code: str
    reason: str
    stored_seq: int | None = None


Decision = Accept | Reject


def decide(
    data: bytes,
    tls_device_id: str,
    directory: DeviceDirectory,
    last_seq: int,
    now: int,
    policy: IngestPolicy = IngestPolicy(),
) -> Decision:
    """Decide on one report received over a TLS connection authenticated as ``tls_device_id``.

    ``last_seq`` is the highest sequence number stored for ``tls_device_id`` (0 if none);
    ``now`` is the server's Unix time in seconds. Never raises for bad input: every refusal
    is a :class:`Reject`.
    """
    if directory.is_revoked(tls_device_id):
        return Reject(403, "revoked", "this device has been revoked from the fleet")
    key = directory.report_key(tls_device_id)
    if key is None:
        return Reject(403, "unknown_device", "this device is not enrolled in the fleet")
    try:
        envelope = codec.decode_report(data, limits=policy.limits)
    except codec.MalformedReport as error:
        return Reject(400, "malformed", str(error))
    if envelope.device_id != tls_device_id:
        return Reject(403, "signer_mismatch",
                      "the report names a different device than the TLS client certificate")
    try:
        report = envelope.verify(key, size=policy.size, limits=policy.limits)
    except codec.BadReportSignature:
        return Reject(403, "bad_signature",
                      "the report signature does not verify with this device's report key")
    except codec.ReportSizeMismatch as error:
        return Reject(400, "bad_size", str(error))
    except codec.BadPadding as error:
        return Reject(400, "bad_padding", str(error))
    except codec.MalformedReport as error:
        return Reject(400, "malformed", str(error))
    if is_replay(report.seq, last_seq):
        return Reject(409, "replay",
                      f"sequence number {report.seq} is not above the last stored ({last_seq}): "
                      "a replay, a duplicate or out of order", stored_seq=last_seq)
    skew = clock_skew(report.timestamp, now, policy)
    if skew is not None:
        return Reject(422, "clock_skew", skew)
    return Accept(report, bytes(data))


def clock_skew(timestamp: int, now: int, policy: IngestPolicy = IngestPolicy(),
               allow_old: bool = False) -> str | None:
    """Why a report dated ``timestamp`` is refused at ``now``, or None inside the window.

    The one clock rule for reports, whichever way they arrive (TLS or QR code).
    ``allow_old`` lifts the age limit only, for someone deliberately reading old reports.
    """
    if timestamp > now + policy.max_future_seconds:
        return f"the report is dated {timestamp - now} s in the future; check the device clock"
    if not allow_old and timestamp < now - policy.max_age_seconds:
        return (f"the report is {now - timestamp} s old, over the {policy.max_age_seconds} s "
                "limit; check the device clock")
    return None
