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
from collections.abc import Iterator, Mapping
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


#: The protocol's integers are signed 64-bit (as TOML's, so every contract bound fits).
#: CBOR's own heads reach -2**64 .. 2**64 - 1, and only a bignum tag (refused) goes beyond.
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
#: Deepest nesting any protocol message has (``{"p": [[name, active, reason]]}`` is 3).
MAX_DEPTH = 8
_SCALARS = (str, bytes, int, float, bool, type(None))


class _NoSemanticTags(Mapping[int, Any]):
    """cbor2's table of tag decoders, with every tag refused.

    The protocol uses no tag. cbor2 decodes many by itself (bignums, decimals, dates,
    sets, shared values …): huge integers that later fail to format, quadratic
    int-to-Decimal conversions, cycles. Answering "yes, and it refuses" for every tag number
    turns all of them into a decode error before the tag's content is interpreted.
    """

    def __getitem__(self, tag: int) -> Any:
        def refuse(*_args: object, **_kwargs: object) -> Any:
            raise ValueError(f"CBOR tag {tag} is not used by the protocol")

        return refuse

    def __contains__(self, tag: object) -> bool:
        return True

    def get(self, tag: int, default: Any = None) -> Any:
        return self[tag]

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


_NO_TAGS = _NoSemanticTags()


def decode_body(body: bytes) -> Any:
    """Decode exactly one CBOR item made of the protocol's types only.

    Allowed: maps (keys str, int or bytes), arrays, text, bytes, signed 64-bit integers,
    floats, true/false/null, nested at most :data:`MAX_DEPTH` deep. Refused: every tag,
    simple values other than true/false/null, ``undefined``, indefinite lengths.

    Raises:
        ProtocolError: ``not_cbor`` — invalid CBOR (a repeated map key included), bytes
            after the item, or a type the protocol does not use. Nothing else: whatever
            the bytes, no other exception leaves this function.
    """
    stream = io.BytesIO(body)
    try:
        # (cbor2 before 6 leaked the bytes of refused invalid UTF-8, agronholm/cbor2#257,
        # found here by tests/fuzz/fuzz_protocol.py; cbor2 is pinned to 6.)
        obj = cbor2.CBORDecoder(stream, allow_duplicate_keys=False, semantic_decoders=_NO_TAGS,
                                max_depth=MAX_DEPTH + 1, allow_indefinite=False).decode()
        _check_types(obj, 0)
    except ProtocolError:
        raise
    except BaseException as error:
        if not isinstance(error, Exception):
            raise  # KeyboardInterrupt, SystemExit: not the app's doing
        raise ProtocolError("not_cbor", _describe(error)) from None
    if stream.tell() != len(body):
        raise ProtocolError("not_cbor", f"{len(body) - stream.tell()} bytes after the CBOR item")
    return obj


def _describe(error: Exception) -> str:
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 (str() of an exception about a hostile value)
        text = type(error).__name__
    return f"message is not valid CBOR ({text[:150]})"


def _check_types(obj: Any, depth: int) -> None:
    """Refuse any type or integer the protocol does not use (iterative depth is bounded)."""
    if depth > MAX_DEPTH:
        raise ProtocolError("not_cbor", f"nested deeper than {MAX_DEPTH}")
    kind = type(obj)
    if kind is int:
        if not INT_MIN <= obj <= INT_MAX:
            raise ProtocolError("not_cbor", "integer outside 64 bits")
    elif kind is dict:
        for key, value in obj.items():
            if type(key) not in (str, int, bytes):
                raise ProtocolError("not_cbor", f"map key of type {type(key).__name__}")
            _check_types(key, depth + 1)
            _check_types(value, depth + 1)
    elif kind is list:
        for item in obj:
            _check_types(item, depth + 1)
    elif kind not in _SCALARS:
        # e.g. cbor2's break marker, undefined, CBORSimpleValue, a tuple key's contents
        raise ProtocolError("not_cbor", f"a CBOR value of type {kind.__name__} is not used")


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
            raise ProtocolError(
                "truncated", f"stream ended {len(self._buffer)} bytes into a message"
            )


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
