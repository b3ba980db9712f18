"""Posts to the fleet server that it must refuse: a rogue client certificate, a replay, a
flipped byte, a report signed by another device (:func:`post_as` with a real identity)."""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path
from typing import Any

from tinyward.assess.attacks.outcome import HTTP_REFUSALS, Outcome, tls_refusal_in_words
from tinyward.link.client import REPORT_CONTENT_TYPE, REPORTS_PATH, client_context

#: The most of an answer an attack reads back (the answer is the target's, not trusted).
MAX_ANSWER = 65536


def post_bytes(connection: http.client.HTTPConnection, path: str, body: bytes,
               content_type: str) -> tuple[int, bytes]:
    """POST ``body`` on ``connection`` and close it; the status and at most
    :data:`MAX_ANSWER` bytes of the answer. Raises what the connection raises (OSError,
    ssl.SSLError, http.client.HTTPException)."""
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.read(MAX_ANSWER)
    finally:
        connection.close()


def _post(host: str, port: int, context: ssl.SSLContext, body: bytes,
          timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    status, raw = post_bytes(connection, REPORTS_PATH, body, REPORT_CONTENT_TYPE)
    try:
        document = json.loads(raw) if raw else {}
    except ValueError:
        document = {"raw": raw[:200].decode("latin-1")}
    return status, document if isinstance(document, dict) else {}


def client_with_rogue_certificate(host: str, port: int, root_ca_pem: bytes, cert: Path,
                                  key: Path, kind: str, report: bytes) -> Outcome:
    """Post ``report`` to the fleet server holding a client certificate it must refuse."""
    context = client_context(root_ca_pem)
    context.load_cert_chain(str(cert), str(key))
    name = f"client with a {kind} certificate"
    try:
        status, document = _post(host, port, context, report)
    except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected) as error:
        # TLS 1.3: the server checks the client certificate after the client has sent its
        # Finished, so a refusal often shows as the session ending before any HTTP answer.
        words = tls_refusal_in_words(error)
        if "hung up" in words:  # the usual TLS 1.3 refusal: say what it means here
            return Outcome(name, True, "the server closed the TLS session during the "
                           "handshake, before any HTTP answer: it did not accept this "
                           "certificate, and the report was never read",
                           reason="certificate refused in the handshake")
        return Outcome(name, True, f"{words}; no HTTP answer, the report was never read",
                       reason=words)
    return Outcome(name, False, f"the server answered HTTP {status}: {document}",
                   reason=f"accepted: HTTP {status}")


def post_as(device: Any, host: str, port: int, data: bytes, name: str) -> Outcome:
    """Post ``data`` with ``device``'s real TLS identity; refused unless a 2xx comes back."""
    from tinyward.link.client import device_context

    context, _pin = device_context(device)
    try:
        status, document = _post(host, port, context, data)
    except (OSError, ssl.SSLError, http.client.HTTPException) as error:
        words = tls_refusal_in_words(error)
        return Outcome(name, True, f"connection failed: {words}", reason=words)
    refused = not 200 <= status < 300
    code = str(document.get("code") or document.get("error") or "")
    reason = str(document.get("reason") or document.get("detail") or "")
    words = HTTP_REFUSALS.get(code, code.replace("_", " ")) if refused else "stored"
    return Outcome(name, refused, f"HTTP {status} {code} {reason}".strip(),
                   reason=f"{words} (HTTP {status})")


def flip_byte(data: bytes, index: int) -> bytes:
    """``data`` with one bit of byte ``index`` flipped (a tampered report)."""
    out = bytearray(data)
    out[index % len(out)] ^= 0x01
    return bytes(out)
