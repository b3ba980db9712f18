"""Length-prefixed CBOR messages between the trusted core and the sandboxed app.

Wire format: a 4-byte big-endian length, then exactly that many bytes holding one CBOR
item (RFC 8949, decoded by cbor2). The receiver refuses a length above its limit as soon
as the 4 header bytes arrive (it never buffers an oversize message), a message that is
not exactly one CBOR item, and a stream that ends inside a message.

Messages (CBOR maps with short keys, since a frame crosses the pipe tens of times a
second):

- core → app: ``{"f": seq, "s": [rows, cols], "d": dtype, "b": bytes}`` — one frame;
  the first message is the start-up configuration ``{"cfg": {...}}``.
- app → core: ``{"p": [[name, active, reason], ...]}`` — protections the child applied,
  sent *before* any application code is imported; ``{"ready": true}`` after the
  application's factory returned; ``{"r": seq, "v": result-or-null}`` per frame.

:class:`MessageDecoder` is sans-IO (feed bytes, take messages); the two ``*_fd`` helpers
do the pipe I/O.
"""

from __future__ import annotations

import io
import os
import select
import struct
import time
from typing import Any

import cbor2
import numpy as np

from tinyward.app.errors import ContractViolation, ProtocolError

HEADER = struct.Struct(">I")
DEFAULT_MAX_MESSAGE = 64 * 1024


def encode_message(obj: object) -> bytes:
    """One message: length header + CBOR."""
    body = cbor2.dumps(obj)
    return HEADER.pack(len(body)) + body


class MessageEncoder:
    """Encodes messages with one long-lived cbor2 encoder.

    Same bytes as :func:`encode_message`, ~4x faster for small messages: setting up a
    cbor2 encoder costs more than encoding a frame header (measured by the sandbox bench).
    """

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._encoder = cbor2.CBOREncoder(self._buffer)

    def encode(self, obj: object) -> bytes:
        buffer = self._buffer
        buffer.seek(0)
        buffer.truncate()
        self._encoder.encode(obj)
        body = buffer.getvalue()
        return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> Any:
    """Decode exactly one CBOR item.

    Raises:
        ProtocolError: ``not_cbor`` — invalid CBOR (a repeated map key included), or bytes
            after the item.
    """
    stream = io.BytesIO(body)
    try:
        # (cbor2 before 6 leaked the bytes of refused invalid UTF-8, agronholm/cbor2#257,
        # found here by tests/fuzz/fuzz_protocol.py; cbor2 is pinned to 6.)
        obj = cbor2.CBORDecoder(stream, allow_duplicate_keys=False).decode()
    except Exception as error:  # noqa: BLE001 (cbor2 raises many types, and RecursionError)
        raise ProtocolError("not_cbor", f"message is not valid CBOR ({error})"[:200]) from None
    if obj is getattr(cbor2, "break_marker", None):  # cbor2 returns a lone 0xff "break" as a value
        raise ProtocolError("not_cbor", "a lone CBOR break code is not a data item")
    if stream.tell() != len(body):
        raise ProtocolError("not_cbor", f"{len(body) - stream.tell()} bytes after the CBOR item")
    return obj


class MessageDecoder:
    """Splits a byte stream into messages. Sans-IO: ``feed`` bytes, then ``next_message``."""

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buffer)

    def next_message(self) -> Any | None:
        """Return the next complete message, or ``None`` if more bytes are needed.

        Raises:
            ProtocolError: ``oversize`` (length above the limit) or ``not_cbor``.
        """
        if len(self._buffer) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(self._buffer)
        if length > self.max_message:
            raise ProtocolError(
                "oversize", f"message of {length} bytes exceeds the limit of {self.max_message}"
            )
        end = HEADER.size + length
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[HEADER.size : end])
        del self._buffer[:end]
        return decode_body(body)

    def eof(self) -> None:
        """The stream ended.

        Raises:
            ProtocolError: ``truncated`` if it ended inside a message.
        """
        if self._buffer:
            raise ProtocolError("truncated", f"stream ended {len(self._buffer)} bytes into a message")


def encode_frame(seq: int, frame: np.ndarray, encoder: MessageEncoder | None = None) -> bytes:
    """A frame message for ``frame`` (a 2-D numeric array)."""
    msg = {"f": seq, "s": list(frame.shape), "d": frame.dtype.name, "b": frame.tobytes()}
    return encoder.encode(msg) if encoder is not None else encode_message(msg)


def decode_frame(msg: Any, dtype: str, shape: tuple[int, int]) -> tuple[int, np.ndarray]:
    """Check a frame message against the expected dtype and shape; return (seq, array).

    Raises:
        ProtocolError: ``malformed`` — not a frame message, or it does not match.
    """
    if type(msg) is not dict or set(msg) != {"f", "s", "d", "b"}:
        raise ProtocolError("malformed", "not a frame message")
    seq, got_shape, got_dtype, data = msg["f"], msg["s"], msg["d"], msg["b"]
    if type(seq) is not int or got_dtype != dtype or got_shape != list(shape):
        raise ProtocolError("malformed", "frame seq, dtype or shape does not match")
    if type(data) is not bytes or len(data) != shape[0] * shape[1] * np.dtype(dtype).itemsize:
        raise ProtocolError("malformed", "frame data has the wrong length")
    return seq, np.frombuffer(data, dtype=dtype).reshape(shape)


def decode_result(msg: Any) -> tuple[int, Any]:
    """Return (seq, result-or-None) from a result message.

    Raises:
        ProtocolError: ``malformed`` — not a result message.
        ContractViolation: ``wrong_type`` — the child reports the value was not encodable.
    """
    if type(msg) is dict and set(msg) == {"r", "bad"} and type(msg["bad"]) is str:
        # The child could not encode the app's return value (e.g. a numpy scalar).
        raise ContractViolation("wrong_type", f"result cannot be encoded: {msg['bad'][:100]}")
    if type(msg) is not dict or set(msg) != {"r", "v"} or type(msg["r"]) is not int:
        raise ProtocolError("malformed", "expected a result message {r: seq, v: result}")
    return msg["r"], msg["v"]


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a blocking fd (raises OSError, e.g. BrokenPipeError)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_message_fd(fd: int, decoder: MessageDecoder, deadline: float | None) -> Any:
    """Read from ``fd`` until ``decoder`` yields a message or ``deadline`` (monotonic) passes.

    Raises:
        TimeoutError: the deadline passed first.
        ProtocolError: ``truncated`` (EOF inside a message), ``oversize``, ``not_cbor``.
        EOFError: the stream ended cleanly between messages.
    """
    msg = decoder.next_message()
    if msg is not None:
        return msg
    poller = select.poll() if deadline is not None else None
    if poller is not None:
        poller.register(fd, select.POLLIN)
    while True:
        if poller is not None:
            remaining = deadline - time.monotonic()  # type: ignore[operator]
            if remaining <= 0 or not poller.poll(remaining * 1000):
                raise TimeoutError("no message before the deadline")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            decoder.eof()
            raise EOFError("the other end closed the pipe")
        decoder.feed(chunk)
        msg = decoder.next_message()
        if msg is not None:
            return msg
