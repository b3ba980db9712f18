"""The QR carrier of an offline report: signed report bytes written as text, and back.

The report is the very format connected devices send (:mod:`tinyward.trust.report`:
COSE_Sign1, ES256 by the device's report key, numbered, fixed size), so a fleet treats both
alike. Only the carrier differs: the bytes are written as text for a QR code,

    ``TW1:`` + base64url (RFC 4648 §5, no padding) of the report

which any QR reader returns unchanged and a person can paste. The report is
:data:`OFFLINE_REPORT_SIZE` bytes, small enough for a QR code a phone reads off a screen.

Pure and neutral: the device side (:mod:`tinyward.readout.offline`) and the fleet side
(:mod:`tinyward.fleet.offline`) both use it, and it imports neither.
"""

from __future__ import annotations

import base64
import binascii
import re

from tinyward.errors import BadInput

__all__ = ["MAX_TEXT_CHARS", "OFFLINE_REPORT_SIZE", "TEXT_PREFIX", "BadOfflineText",
           "from_text", "to_text"]

OFFLINE_REPORT_SIZE = 512
TEXT_PREFIX = "TW1:"
MAX_TEXT_CHARS = 4096
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class BadOfflineText(BadInput):
    """The text is not a tinyward offline report (wrong prefix, characters or length)."""


def to_text(report: bytes) -> str:
    """The QR text of a signed report."""
    return TEXT_PREFIX + base64.urlsafe_b64encode(report).rstrip(b"=").decode("ascii")


def from_text(text: str) -> bytes:
    """Parse QR text back to report bytes. White space (line wrapping) is ignored.

    Raises :class:`BadOfflineText` with the reason.
    """
    if len(text) > MAX_TEXT_CHARS:
        raise BadOfflineText(
            f"the text is {len(text)} characters; an offline report is far shorter"
        )
    compact = "".join(text.split())
    if not compact.startswith(TEXT_PREFIX):
        raise BadOfflineText(f"an offline report starts with {TEXT_PREFIX!r}; this text does not")
    body = compact[len(TEXT_PREFIX) :]
    if not _BASE64URL.fullmatch(body):
        raise BadOfflineText("the report text holds characters outside base64url (A-Z a-z 0-9 - _)")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise BadOfflineText("the report text is not valid base64url (cut short?)") from None
