"""The device's outbound link: HTTPS over mutual TLS 1.3 to a pinned fleet server.

Zero trust on the network (DESIGN idea 4): the device connects *out*, never listens, and
believes a server only when both checks pass:

1. **Chain**: the server's certificate chains to the fleet's root CA (from the device's
   protected storage, never from the system trust store), is valid now, is for server
   authentication, and names the host in the URL. Python's ``ssl`` (OpenSSL) does this
   during the handshake; TLS 1.3 is the only version offered.
2. **Pin**: SHA-256 over the server certificate's SubjectPublicKeyInfo equals one of the
   pins the fleet gave (its current server key and its pre-made next one, so that a
   server key rotation needs no re-provisioning). Checked right after the handshake and
   *before any byte of a report is written*, compared in constant time against every
   pin. This refuses a server holding a certificate that the right CA issued for another
   key (a stolen or mis-issued one).

The device authenticates with its TLS client certificate, whose key the keystore loads
into the ``SSLContext`` without handing it out.

Failures are classified so that the runner knows what to do (see ``errors.py``):
unreachable → keep the report and retry with :class:`Backoff`; refused handshake or pin →
retry too (it may be an attacker in the path for a while), but say so loudly; the server
refusing one report for good → drop it, counted.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tinyward._backoff import Backoff  # re-exported: the link's retries use it
from tinyward.errors import Misuse
from tinyward.link import chunks
from tinyward.link.errors import (
    BadServerAnswer,
    PinMismatch,
    ReportRejected,
    ServerRefused,
    ServerUnreachable,
)

REPORTS_PATH = "/v1/reports"
REPORT_CONTENT_TYPE = "application/cose; cose-type=\"cose-sign1\""


@dataclass(frozen=True)
class LinkConfig:
    """Timeouts and limits of the link (safe defaults)."""

    connect_timeout: float = 5.0
    io_timeout: float = 10.0
    max_answer_bytes: int = 4096
    backoff_initial: float = 0.5
    backoff_max: float = 60.0
    #: Data bytes per update frame; the fleet's (fleet/delivery.py) must be the same.
    chunk_size: int = chunks.DEFAULT_CHUNK_SIZE
    #: Accept update frames without padding: only ``tinyward bench update``'s control.
    unsafe_unpadded_frames: bool = False
    #: Skip the server key pin (the CA chain is still checked): only the assessment lab's
    #: control (``device run --unsafe-no-pin``, hidden), to show the pin probe failing.
    unsafe_unpinned: bool = False

    def __post_init__(self) -> None:
        chunks.check_chunk_size(self.chunk_size)


@dataclass(frozen=True)
class ServerURL:
    """A parsed ``https://host[:port]`` fleet server address."""

    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> ServerURL:
        """Raises :class:`Misuse` for anything but ``https://host[:port]`` (no path, no user)."""
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
            raise Misuse(f"server URL must look like https://host:port, not {url!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise Misuse(f"server URL must not carry a path or query: {url!r}")
        try:
            port = parts.port or 443
        except ValueError:
            raise Misuse(f"server URL has a bad port: {url!r}") from None
        return cls(parts.hostname, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


def spki_sha256_of_der(certificate_der: bytes) -> bytes:
    """SHA-256 over the SubjectPublicKeyInfo of a DER certificate (the pin)."""
    cert = x509.load_der_x509_certificate(certificate_der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def client_context(root_ca_pem: bytes) -> ssl.SSLContext:
    """A TLS 1.3-only client context that trusts only ``root_ca_pem``.

    The caller adds the client credentials (``Keystore.load_tls_client_credentials``).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and host name
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(cadata=root_ca_pem.decode("ascii"))
    return context


def device_context(device: Any) -> tuple[ssl.SSLContext, tuple[bytes, ...]]:
    """The TLS context of a provisioned :class:`~tinyward.trust.device.Device`, and its
    server pins (current, then next).

    Raises:
        tinyward.trust.device.NotProvisioned: the device has no fleet yet.
        tinyward.trust.errors.KeystoreError: the TLS credentials cannot be loaded.
        tinyward.trust.device.ModeRefused: the device is provisioned air-gapped.
    """
    device.check_may_connect()  # no TLS credentials at all for an air-gapped device
    trust = device.fleet_trust()
    context = client_context(trust.root_ca_pem)
    device.keystore.load_tls_client_credentials(
        context, device.handle("tls"), device.certificate_path("tls"))
    return context, tuple(bytes(pin) for pin in trust.pins)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPSConnection that checks the SPKI pin right after the handshake."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext,
                 pins: tuple[bytes, ...], timeout: float, unsafe_unpinned: bool = False
                 ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._pins = pins
        self._unsafe_unpinned = unsafe_unpinned
        self.peer_spki_sha256: bytes | None = None

    def connect(self) -> None:
        super().connect()
        if not isinstance(self.sock, ssl.SSLSocket):  # checked under python -O too
            raise Misuse("the pinned connection has no TLS socket")
        der = self.sock.getpeercert(binary_form=True)
        got = spki_sha256_of_der(der) if der else b""
        self.peer_spki_sha256 = got
        matched = False
        for pin in self._pins:  # every pin compared, in constant time: no early exit
            matched |= hmac.compare_digest(got, pin)
        if not matched and not self._unsafe_unpinned:
            self.close()
            pinned = " or ".join(f"{pin.hex()[:16]}…" for pin in self._pins)
            raise PinMismatch(
                f"the server at {self.host}:{self.port} has a certificate from the fleet CA but "
                f"its key (SPKI SHA-256 {got.hex()[:16]}…) is not the pinned server key "
                f"({pinned}): refusing to send it anything. A man in the middle, or the "
                "server's key was replaced by one this device has no pin for (refresh its "
                "bundle: tinyward device install --refresh)."
            )


class ReportLink:
    """A kept-alive HTTPS connection that posts signed reports and returns acknowledgements."""

    def __init__(self, server: ServerURL | str, context: ssl.SSLContext,
                 pin: bytes | tuple[bytes, ...], config: LinkConfig | None = None) -> None:
        pins = (bytes(pin),) if isinstance(pin, bytes | bytearray) else tuple(pin)
        if not pins or any(len(p) != 32 for p in pins):
            raise Misuse("the server pin must be a 32-byte SHA-256; refusing to run without one")
        if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
            raise Misuse("the TLS context must verify the server's chain and host name")
        self.server = server if isinstance(server, ServerURL) else ServerURL.parse(server)
        self._context = context
        self._pins = tuple(bytes(p) for p in pins)
        self._config = config or LinkConfig()
        self._conn: _PinnedHTTPSConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> _PinnedHTTPSConnection:
        if self._conn is None:
            self._conn = _PinnedHTTPSConnection(self.server.host, self.server.port,
                                                self._context, self._pins,
                                                self._config.connect_timeout,
                                                self._config.unsafe_unpinned)
            try:
                self._conn.connect()
            except BaseException:
                self._conn = None
                raise
            if self._conn.sock is None:
                raise Misuse("a connected link has no socket")
            self._conn.sock.settimeout(self._config.io_timeout)
        return self._conn

    def connect(self) -> None:
        """Open (or keep) the connection: handshake, chain and pin. Raises as :meth:`send`."""
        try:
            self._connection()
        except (PinMismatch, ServerRefused):
            raise
        except ssl.SSLCertVerificationError as error:
            raise self._refused(error) from None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError) as error:
            # The connection died mid-handshake (server killed, path cut): not a refusal.
            raise ServerUnreachable(f"connection to {self.server} broke: {error}") from None
        except ssl.SSLError as error:
            raise ServerRefused(f"TLS handshake with {self.server} failed: {error}") from None
        except OSError as error:
            raise ServerUnreachable(f"cannot reach {self.server}: {error}") from None

    def _refused(self, error: ssl.SSLCertVerificationError) -> ServerRefused:
        return ServerRefused(
            f"the server at {self.server} is not the fleet's: its certificate failed "
            f"verification ({error.verify_message}); refusing to send it anything"
        )

    def send(self, report: bytes) -> int:
        """POST one signed report (with an idle fetch request); return ``stored_seq``.
        Raises as :meth:`exchange`."""
        return self.exchange(report)[0]

    def exchange(self, report: bytes, fetch: chunks.FetchRequest = chunks.IDLE_REQUEST
                 ) -> tuple[int, chunks.Frame | None]:
        """POST one signed report with its fetch request; return the server's
        ``stored_seq`` for this device and the update frame it answered with (None from a
        fleet server that does not deliver updates: a JSON answer).

        Every report carries a fetch request of the same width, idle or not
        (:mod:`tinyward.link.chunks`), so the request head never changes size.

        Raises:
            PinMismatch: the server's key is not the pinned one (nothing was sent).
            ServerRefused: the chain or host name failed, or the server refused this
                device's certificate.
            ServerUnreachable: connection refused, reset or timed out (keep the report).
            ReportRejected: the server refused this report for good (4xx about it).
            BadServerAnswer: the answer is not a valid acknowledgement.
        """
        reused = self._conn is not None
        try:
            return self._send_once(report, fetch)
        except ServerUnreachable:
            if not reused:
                raise
        # A kept-alive connection the server had already closed (its idle timeout is
        # shorter than the interval): try once on a fresh one. Sending the report twice is
        # safe: the server stores it once and answers the second with its stored_seq.
        return self._send_once(report, fetch)

    @property
    def _answer_limit(self) -> int:
        return max(self._config.max_answer_bytes, chunks.frame_size(self._config.chunk_size))

    def _send_once(self, report: bytes, fetch: chunks.FetchRequest
                   ) -> tuple[int, chunks.Frame | None]:
        self.connect()
        conn = self._conn
        if conn is None:
            raise Misuse("connect() left no connection")
        try:
            conn.request("POST", REPORTS_PATH, body=report, headers={
                "Content-Type": REPORT_CONTENT_TYPE, "Accept": "application/json",
                chunks.FETCH_HEADER: fetch.header()})
            response = conn.getresponse()
            body = response.read(self._answer_limit + 1)
            status = response.status
            content_type = response.getheader("Content-Type", "")
            if response.will_close:
                self.close()
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError) as error:
            self.close()
            raise ServerUnreachable(f"connection to {self.server} broke: {error}") from None
        except ssl.SSLError as error:
            self.close()
            # In TLS 1.3 the server checks the client certificate after the client thinks
            # the handshake is done, so its refusal arrives as an alert on the first read.
            raise ServerRefused(
                f"the server at {self.server} refused the connection ({error.reason or error}); "
                "is this device enrolled in the fleet and not revoked?"
            ) from None
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise ServerUnreachable(f"connection to {self.server} failed: {error!r}") from None
        if content_type.split(";")[0].strip() == chunks.CHUNK_CONTENT_TYPE and status in (200,
                                                                                        409):
            return self._frame_answer(status, body)
        return self._answer(status, body), None

    def _frame_answer(self, status: int, body: bytes) -> tuple[int, chunks.Frame]:
        try:
            frame = chunks.decode_frame(body, self._config.chunk_size,
                                        unsafe_unpadded=self._config.unsafe_unpadded_frames)
        except BadServerAnswer:
            self.close()
            raise
        if status == 409 and frame.error != "replay":
            raise BadServerAnswer(f"the server answered 409 with an update frame but no replay "
                                  f"code ({frame.error!r})")
        return frame.stored_seq, frame

    def _answer(self, status: int, body: bytes) -> int:
        if len(body) > self._answer_limit:
            self.close()
            raise BadServerAnswer(
                f"the server's answer is over {self._answer_limit} bytes"
            )
        try:
            document = json.loads(body) if body else {}
        except ValueError:
            document = {}
        stored = document.get("stored_seq") if isinstance(document, dict) else None
        stored_ok = isinstance(stored, int) and not isinstance(stored, bool) and stored >= 0
        if status == 200:
            if not stored_ok:
                raise BadServerAnswer(f"the server answered 200 without a valid stored_seq: "
                                      f"{body[:200]!r}")
            return int(stored)  # type: ignore[arg-type]
        if status == 409 and stored_ok:
            # A report the server already has (sent again after a lost acknowledgement).
            return int(stored)  # type: ignore[arg-type]
        code = document.get("error") if isinstance(document, dict) else None
        reason = document.get("reason") if isinstance(document, dict) else None
        text = f"{status} {code or body[:200]!r}" + (f": {reason}" if reason else "")
        if status in (408, 429) or status >= 500:
            raise ServerUnreachable(f"the server is busy or failing: {text}")
        if status in (401, 403):
            # Identity trouble (revoked, unknown, keys that do not match the fleet's
            # records) concerns every report alike: keep them all, and say so.
            raise ServerRefused(f"the server refuses this device: {text}")
        if code == "bad_size":
            # A configuration mismatch, not a bad report: dropping would lose every report.
            raise ServerRefused(f"the fleet expects another report size; run the device with "
                                f"the fleet's --size ({text})")
        if 400 <= status < 500:
            raise ReportRejected(f"the server refused the report: {text}", status)
        raise BadServerAnswer(f"unexpected answer from the server: {text}")


__all__ = [
    "REPORTS_PATH",
    "Backoff",
    "LinkConfig",
    "ReportLink",
    "ServerURL",
    "client_context",
    "device_context",
    "spki_sha256_of_der",
]
