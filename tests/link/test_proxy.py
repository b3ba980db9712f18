"""The recording proxy frames TLS records from the byte stream and can cut the path."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from tinyward.lab.proxy import TCPProxy


def _echo_server() -> tuple[socket.socket, int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def _record(content_type: int, body: bytes) -> bytes:
    return struct.pack(">BHH", content_type, 0x0303, len(body)) + body


def test_records_are_framed_by_their_headers_not_by_tcp_segments() -> None:
    server, port = _echo_server()
    with server, TCPProxy(("127.0.0.1", port), record=True) as proxy:
        stream = _record(23, b"a" * 1000) + _record(23, b"b" * 10) + _record(21, b"c" * 2)
        with socket.create_connection(("127.0.0.1", proxy.port)) as client:
            for i in range(0, len(stream), 7):  # dribbled in 7-byte pieces
                client.sendall(stream[i:i + 7])
            got = b""
            while len(got) < len(stream):
                got += client.recv(65536)
        assert got == stream
        import time
        time.sleep(0.1)
        up = [(r.content_type, r.length) for r in proxy.records if r.upstream]
        down = [(r.content_type, r.length) for r in proxy.records if not r.upstream]
    assert up == [(23, 1005), (23, 15), (21, 7)] == down


def test_cut_refuses_new_connections_and_restore_accepts_them_again() -> None:
    server, port = _echo_server()
    with server, TCPProxy(("127.0.0.1", port)) as proxy:
        proxy.cut()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2).recv(1)
        proxy.restore()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as client:
            client.sendall(b"ping")
            assert client.recv(4) == b"ping"
