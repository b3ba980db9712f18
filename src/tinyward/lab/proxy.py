"""A loopback TCP proxy that can cut the path and record what an eavesdropper sees.

Used by the crash-and-partition test (cut and restore the network path between devices and
the fleet server) and by ``tinyward bench shaping`` (the sizes and times of every TLS
record that passes, i.e. exactly what a passive observer on the path learns). It only
forwards bytes; it never terminates TLS.

Records are framed by their 5-byte TLS headers (RFC 8446 §5.1: type, legacy version,
length), read from the byte stream as it passes, so their sizes do not depend on how TCP
happened to split the stream.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Self


@dataclass(frozen=True)
class RecordSeen:
    """One TLS record as a passive observer sees it."""

    time: float  # monotonic seconds when its last byte passed
    upstream: bool  # True: client (device) to server
    content_type: int  # 23 = application data, 22 = handshake, 20 = change cipher spec, 21 alert
    length: int  # the whole record, header included
    connection: int


class _Framer:
    """Cuts one direction of a TLS byte stream into records (headers only, no decryption)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        self._buffer += data
        out = []
        while len(self._buffer) >= 5:
            content_type, _version, length = struct.unpack(">BHH", self._buffer[:5])
            if len(self._buffer) < 5 + length:
                break
            out.append((content_type, 5 + length))
            self._buffer = self._buffer[5 + length:]
        return out


class TCPProxy:
    """Forwards ``127.0.0.1:port`` to ``target``; :meth:`cut` and :meth:`restore` the path."""

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1", port: int = 0,
                 record: bool = False, max_records: int = 1_000_000) -> None:
        self.target = target
        self.host = host
        self._port = port
        self.record = record
        self.records: list[RecordSeen] = []
        self._max_records = max_records
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._connections = 0
        self._open()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self._port}"

    def _open(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._port))
        listener.listen(128)
        listener.settimeout(0.2)
        self._port = listener.getsockname()[1]
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def cut(self) -> None:
        """Close the listener and every open connection: the network path is gone."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        """Listen again on the same port."""
        if self._listener is None:
            self._open()

    def close(self) -> None:
        self.cut()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                if self._listener is not listener:
                    return
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._connections += 1
                number = self._connections
                self._sockets |= {client, upstream}
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, up, number),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool, number: int) -> None:
        framer = _Framer()
        try:
            src.settimeout(None)
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.record:
                    now = time.monotonic()
                    for content_type, length in framer.feed(data):
                        if len(self.records) < self._max_records:
                            self.records.append(RecordSeen(now, upstream, content_type, length,
                                                           number))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # Shut both ends so the other pump wakes up; each pump closes its own source.
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._sockets.discard(src)
            src.close()


__all__ = ["RecordSeen", "TCPProxy"]
