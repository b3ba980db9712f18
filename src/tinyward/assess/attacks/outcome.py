"""What an attack did, and TLS and HTTP refusals put in plain words."""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """What happened: ``refused`` is True when the system under test said no."""

    attack: str
    refused: bool
    detail: str
    #: What success is called: "refused" for an attack, "verified" for a control check.
    label: str = "refused"
    #: Why, in a few plain words (the demo's table); ``detail`` has the whole story.
    reason: str = ""


# ---- refusals in plain words ------------------------------------------------------------

#: The fleet server's refusal codes (tinyward.fleet.ingest), as a person would say them.
HTTP_REFUSALS = {
    "replay": "already stored: a replay",
    "bad_signature": "signature does not verify",
    "signer_mismatch": "signed by another device",
    "unknown_device": "not a device of this fleet",
    "revoked": "device revoked",
    "client_certificate_required": "no device certificate",
    "malformed": "not a well-formed report",
    "bad_size": "wrong report size",
    "bad_padding": "padding is not zeros",
    "clock_skew": "dated outside the clock window",
    "rate_limited": "too many reports",
}


def tls_refusal_in_words(error: BaseException) -> str:
    """What a failed TLS connection means, in plain words, instead of OpenSSL's text
    (``EOF occurred in violation of protocol (_ssl.c:2393)``)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"server certificate refused: {error.verify_message}"
    text = f"{getattr(error, 'reason', '') or ''} {error}".upper()
    if "UNKNOWN_CA" in text or "UNKNOWN CA" in text:
        return "certificate's CA not trusted by peer"
    if "CERTIFICATE_REQUIRED" in text or "CERTIFICATE REQUIRED" in text:
        return "the peer requires a certificate"
    if any(word in text for word in ("BAD_CERTIFICATE", "BAD CERTIFICATE",
                                      "CERTIFICATE_UNKNOWN", "CERTIFICATE UNKNOWN")):
        return "certificate not accepted by the peer"
    if isinstance(error, (ssl.SSLEOFError, ConnectionResetError, ConnectionAbortedError,
                          http.client.RemoteDisconnected)) or "EOF" in text:
        # TLS 1.3: a server that refuses the client's certificate closes the session after
        # the client's Finished, before any answer.
        return "server hung up in the TLS handshake"
    if isinstance(error, ConnectionRefusedError):
        return "nothing listens there"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return f"TLS failed: {getattr(error, 'reason', None) or type(error).__name__}"
