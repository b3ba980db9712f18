"""A rogue fleet server: does a device that pins its server send anything to an impostor?"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from pathlib import Path
from typing import Self


class RogueServer:
    """A TLS 1.3 server on ``host`` that impersonates the fleet server.

    It records how many TCP connections it accepted, how many completed a handshake and how
    many application bytes it received: a device that checks its pin completes the
    handshake (the chain is good) but must send nothing after it; one that refuses another
    CA's certificate aborts the handshake, which only the connection count tells apart
    from a device that never came.
    """

    def __init__(self, cert: Path, key: Path, host: str = "127.0.0.1") -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_3
        self._context.load_cert_chain(str(cert), str(key))
        self._sock = socket.create_server((host, 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self.host = host
        self.connections = 0
        self.handshakes = 0
        self.bytes_received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="rogue-server", daemon=True)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1  # counted here, in the one accepting thread
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        raw.settimeout(3.0)
        try:
            with self._context.wrap_socket(raw, server_side=True) as tls:
                self.handshakes += 1
                data = b""
                while len(data) < 1 << 16:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                    self.bytes_received += len(chunk)
                    if b"\r\n\r\n" in data:
                        body = json.dumps({"stored_seq": 0}).encode()
                        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                    % (len(body), body))
                        break
        except (OSError, ssl.SSLError):
            pass
