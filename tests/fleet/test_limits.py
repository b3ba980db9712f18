"""Rate limits and slow clients (slowloris) against a real server with short timeouts.

Every wait is bounded; the assertions are about what happens (closed, refused, served),
never about how fast.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinyward.fleet.server import ServerConfig

from .serverkit import Running, start_running

CONFIG = ServerConfig(rate_per_second=0.01, burst=3, max_connections_per_ip=4,
                      handshake_timeout=1.0, idle_timeout=1.0, body_timeout=1.0)
BOUND = 10.0  # seconds: the most any test waits for the server to act


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    state = start_running(tmp_path_factory.mktemp("limited"), ("a", "b", "slow"), CONFIG)
    yield state
    state.server.stop()


def _closed_by_server(sock: ssl.SSLSocket | socket.socket, dribble: bytes = b"") -> bool:
    """Keep dribbling a byte every 0.2 s; True once the server has closed the connection."""
    deadline = time.monotonic() + BOUND
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if dribble:
                sock.send(dribble)
            data = sock.recv(4096)
            if data == b"":
                return True
            if b"HTTP/1.1" in data:
                return True  # answered (e.g. 408) and closed or about to close
        except TimeoutError:
            continue
        except (OSError, ssl.SSLError):
            return True
    return False


def _tls(limited: Running, source: str, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", limited.server.port), timeout=BOUND,
                                   source_address=(source, 0))
    return (context or limited.anonymous_context()).wrap_socket(raw, server_hostname="127.0.0.1")


def test_rate_limit_429_with_reason_then_other_device_served(limited: Running) -> None:
    statuses = [limited.post("a", limited.report("a"))[0] for _ in range(3)]
    assert statuses == [200, 200, 200]
    status, body = limited.post("a", limited.report("a"))
    assert (status, body["error"]) == (429, "rate_limited")
    assert limited.post("b", limited.report("b"))[0] == 200


def test_silent_tcp_client_cut_at_handshake_timeout(limited: Running) -> None:
    with socket.create_connection(("127.0.0.1", limited.server.port), timeout=BOUND) as raw:
        assert _closed_by_server(raw)


def test_slow_header_clients_cut_and_capped_others_served(limited: Running) -> None:
    with contextlib.ExitStack() as stack:
        slow = []
        for _ in range(8):  # twice the per-address cap, from another loopback address
            sock = stack.enter_context(_tls(limited, "127.0.0.2"))
            sock.send(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        # A device on another address is served while the slow clients hang on.
        assert limited.request("GET", "/v1/health")[0] == 200
        # Every slow client is closed by the server (over the cap: at once; the others at
        # the idle timeout) although each keeps sending a byte every 0.2 s.
        assert all(_closed_by_server(sock, dribble=b"X") for sock in slow)
    assert limited.request("GET", "/v1/health")[0] == 200


def test_slow_body_gets_408(limited: Running) -> None:
    context = limited.context("slow")
    with _tls(limited, "127.0.0.3", context) as sock:
        sock.send(b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/cbor\r\n"
                  b"Content-Length: 1024\r\n\r\n")
        sock.settimeout(BOUND)
        answer = b""
        deadline = time.monotonic() + BOUND
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                sock.send(b"\x00")
            sock.settimeout(0.3)
            with contextlib.suppress(TimeoutError):
                answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert limited.post("b", limited.report("b"))[0] in (200, 429)


def test_store_failure_is_503_and_not_acked(limited: Running, tmp_path: Path) -> None:
    store = limited.store
    original = store.append_many

    def broken(*args: object, **kwargs: object) -> list[int]:
        raise OSError("disk full (simulated)")

    store.append_many = broken  # type: ignore[method-assign]
    try:
        # A fresh device so that the rate limit of the other tests does not interfere.
        status, body = limited.post("slow", limited.report("slow"))
    finally:
        store.append_many = original  # type: ignore[method-assign]
    assert (status, body["error"]) == (503, "storage_unavailable")
    assert store.last_seq(limited.devices["slow"].device_id) == 0
