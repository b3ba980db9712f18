"""A hostile device for the red-team tests: a loopback TCP service whose every answer the
test scripts (what it says, how slowly, for how long).

    with hostile(answer) as device:     # answer(request_head: bytes, send) per connection
        ... device.port ...

``send(data, pace=0.0)`` writes ``data``, one byte every ``pace`` seconds when ``pace`` is
set (a slow device); the server stops pacing when the test ends. Bounded: at most
:data:`MAX_CONNECTIONS` connections, each answered in its own thread.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_CONNECTIONS = 200

Send = Callable[..., None]  # send(data, pace=0.0)
Answer = Callable[[bytes, Send], None]


@dataclass
class Hostile:
    port: int
    stop: threading.Event = field(default_factory=threading.Event)
    requests: list[bytes] = field(default_factory=list)


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@contextlib.contextmanager
def hostile(answer: Answer, tls: tuple[Path, Path] | None = None,
            handshake_delay: float = 0.0) -> Iterator[Hostile]:
    """``tls``: a certificate and key (tlsservice.self_signed) to answer over TLS, each
    handshake ``handshake_delay`` seconds after the connection."""
    server = socket.create_server(("127.0.0.1", 0))
    context = None
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
    server.settimeout(0.2)
    device = Hostile(server.getsockname()[1])

    def serve(conn: socket.socket) -> None:
        if context is not None:
            if device.stop.wait(handshake_delay):
                conn.close()
                return
            conn.settimeout(10)
            try:
                conn = context.wrap_socket(conn, server_side=True)
            except OSError:
                conn.close()
                return
        def send(data: bytes, pace: float = 0.0) -> None:
            if not pace:
                conn.sendall(data)
                return
            for index in range(len(data)):
                if device.stop.wait(pace):
                    return
                conn.sendall(data[index:index + 1])

        with contextlib.suppress(OSError), conn:
            conn.settimeout(10)
            head = _read_head(conn)
            device.requests.append(head)
            answer(head, send)

    def accept() -> None:
        served = 0
        while not device.stop.is_set() and served < MAX_CONNECTIONS:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            served += 1
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield device
    finally:
        device.stop.set()
        thread.join(timeout=5)
        server.close()


def http(status: int, body: str = "", headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A whole HTTP/1.0 answer."""
    lines = [f"HTTP/1.0 {status} X"] + [f"{k}: {v}" for k, v in headers] + \
        [f"Content-Length: {len(body.encode())}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode() + body.encode()


FORM = ('<html><body><form method="post" action="{action}">'
        '<input type="hidden" name="token" value="t">'
        '<input type="password" name="pw"></form></body></html>')
