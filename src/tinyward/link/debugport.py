"""``unsafe_debug_port``: the listening debug port some devices ship with, for the lab only.

A tinyward device listens on no port (it only connects out). The assessment's lab check
(``tests/assess/test_lab_tiers.py``) must show that a device which *does* listen loses
the tier that asks for no listening ports (C-SURF-1), so this is a real listener in the
real ``device run`` process, switched on only by the hidden ``--unsafe-debug-port`` flag
(never by a default). It is the kind of port that is otherwise well built: HTTPS (TLS 1.3
only, a throw-away self-signed key), a GET of the run's status counters, no login, no
secret — so only the listening itself is wrong, and only C-SURF-1 should fail.
"""

from __future__ import annotations

import datetime as _dt
import json
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["DebugPort"]

_HANDSHAKE_TIMEOUT = 5.0


def _context() -> ssl.SSLContext:
    """A TLS 1.3-only server context with a fresh self-signed P-256 key (never stored)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tinyward debug port")])
    now = _dt.datetime.now(_dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with tempfile.TemporaryDirectory() as folder:  # load_cert_chain reads files only
        pem = Path(folder) / "debug.pem"
        pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
                        + cert.public_bytes(serialization.Encoding.PEM))
        context.load_cert_chain(pem)
    return context


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], status: Callable[[], dict[str, Any]]) -> None:
        super().__init__(address, _Handler)
        self.tls = _context()
        self.status = status

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, peer = super().get_request()
        sock.settimeout(_HANDSHAKE_TIMEOUT)
        # The handshake runs in the request's own thread (on its first read), so a
        # client that never finishes one holds only its thread, not the accept loop.
        return self.tls.wrap_socket(sock, server_side=True,
                                    do_handshake_on_connect=False), peer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = _HANDSHAKE_TIMEOUT

    def do_GET(self) -> None:
        body = json.dumps(self.server.status(), default=str).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # a debug port that logs every probe would fill the device's log


class DebugPort:
    """The listener, serving ``status()`` as JSON on every interface at ``port``."""

    def __init__(self, port: int, status: Callable[[], dict[str, Any]]) -> None:
        self._server = _Server(("0.0.0.0", port), status)  # noqa: S104 - the point of it
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="unsafe-debug-port", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
