"""Update delivery inside the report exchange: fixed-size chunk requests and answers (sans-IO).

A device fetches its update metadata and targets over the link it already has, one chunk per
report, so an eavesdropper who sees every TLS record's size and time learns nothing about
whether an update is under way or which component it is:

- **Every request carries a fetch request of the same width**, the ``X-TW-Fetch`` header:
  82 hex digits (kind, a 32-byte *handle*, an 8-byte offset), all zeros when the device wants
  nothing. The handle is the SHA-256 of the repository-relative path
  (``metadata/3.root.json``, ``targets/<sha256>.app-1.2.0.tar``): the name of a file never
  travels in the clear inside TLS either, and its length cannot show. A header, not a field
  of the report: a report is signed and stored *before* it is sent (it may leave minutes
  later after an outage, and the fleet keeps it for good), while a fetch request belongs to
  the exchange that carries it. A fixed-width header keeps the request head a constant size.
- **Every answer to such a request is one frame of exactly** :func:`frame_size` bytes
  (``application/cbor``): the acknowledgement (``stored_seq``), a status, the handle and
  offset it answers, the file's total length, up to ``chunk_size`` bytes of data and the
  fleet's offer (:class:`~tinyward.update.meta.Offer`, or none), as one CBOR map padded with
  zero bytes. A filler frame (nothing asked, or nothing to send) is the same size as a full
  chunk.

Nothing here does I/O: the fleet builds frames (:mod:`tinyward.fleet.delivery`), the link
carries them (:mod:`tinyward.link.client`), the device's fetcher asks for and consumes them
(:mod:`tinyward.update.fetcher`).

Cost: one frame down per report, ``chunk_size + FRAME_OVERHEAD`` bytes plus the 82-character
header up; an update of ``n`` bytes takes ``ceil(n / chunk_size)`` reports
(:func:`delivery_seconds`, :func:`delivery_bytes_per_hour`; docs/updates.md).
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from dataclasses import dataclass
from typing import Any, Protocol

import cbor2

from tinyward.errors import Misuse
from tinyward.link.errors import BadServerAnswer

FETCH_HEADER = "X-TW-Fetch"
CHUNK_CONTENT_TYPE = "application/cbor"
DEFAULT_CHUNK_SIZE = 1024
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 256, 16384
#: Room in a frame for everything but the data: map keys, status, handle, offsets, the
#: acknowledgement, an error code and the offer (component, path of at most
#: MAX_OFFER_PATH bytes, version).
FRAME_OVERHEAD = 400
MAX_OFFER_PATH = 200
HANDLE_BYTES = 32
_REQUEST_BYTES = 1 + HANDLE_BYTES + 8
_REQUEST_RE = re.compile(f"^[0-9a-f]{{{2 * _REQUEST_BYTES}}}$")

# Frame status: what a frame holds.
IDLE = 0  # nothing was asked (filler)
DATA = 1  # bytes of the file asked for
NOT_FOUND = 2  # no such file in the repository (TUF reads it as HTTP 404)
BAD_REQUEST = 3  # the fetch request was malformed (the report itself was fine)
UNAVAILABLE = 4  # the fleet has no repository, or could not read the file
STATUSES = (IDLE, DATA, NOT_FOUND, BAD_REQUEST, UNAVAILABLE)


def path_handle(path: str) -> bytes:
    """The handle of a repository-relative path: SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(path.encode("utf-8")).digest()


@dataclass(frozen=True)
class FetchRequest:
    """What the device asks for in one exchange: ``offset`` of the file ``handle``
    (None: nothing)."""

    handle: bytes | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        if self.handle is not None and len(self.handle) != HANDLE_BYTES:
            raise Misuse("a fetch handle is 32 bytes (SHA-256 of the path)")
        if not 0 <= self.offset < 2**63:
            raise Misuse("a fetch offset is 0..2^63-1")
        if self.handle is None and self.offset:
            raise Misuse("an idle fetch request has no offset")

    @property
    def idle(self) -> bool:
        return self.handle is None

    def header(self) -> str:
        """The ``X-TW-Fetch`` value: always 82 lowercase hex digits."""
        if self.handle is None:
            return "00" * _REQUEST_BYTES
        return (b"\x01" + self.handle + self.offset.to_bytes(8, "big")).hex()

    @classmethod
    def parse(cls, value: str) -> FetchRequest:
        """Parse a header value; :class:`ValueError` for anything but a well-formed one."""
        if not _REQUEST_RE.match(value):
            raise ValueError(f"{FETCH_HEADER} is {2 * _REQUEST_BYTES} lowercase hex digits")
        raw = bytes.fromhex(value)
        kind, handle, offset = raw[0], raw[1:1 + HANDLE_BYTES], int.from_bytes(raw[-8:], "big")
        if kind == 0 and not any(raw):
            return cls()
        if kind != 1 or offset >= 2**63:
            raise ValueError(f"{FETCH_HEADER}: unknown kind or offset out of range")
        return cls(handle, offset)


IDLE_REQUEST = FetchRequest()


@dataclass(frozen=True)
class OfferWire:
    """The fleet's offer as it travels (the update package turns it into an Offer)."""

    component: str
    target_path: str
    version: str


@dataclass(frozen=True)
class Frame:
    """One answer to a report that carried a fetch request (see module docstring).

    ``error`` is the report's own refusal code when the report was not stored anew
    (``replay``: already stored; ``stored_seq`` acknowledges it), else None.
    """

    stored_seq: int
    status: int = IDLE
    handle: bytes = bytes(HANDLE_BYTES)
    offset: int = 0
    total: int = 0
    data: bytes = b""
    offer: OfferWire | None = None
    error: str | None = None

    def answers(self, request: FetchRequest) -> bool:
        """True if this frame is the answer to ``request`` (not a filler, not another's)."""
        return (not request.idle and self.status != IDLE and self.handle == request.handle
                and self.offset == request.offset)


def frame_size(chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """The exact size in bytes of every frame for ``chunk_size``."""
    check_chunk_size(chunk_size)
    return chunk_size + FRAME_OVERHEAD


def check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise Misuse(f"chunk size must be {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes, "
                     f"not {chunk_size!r}")


def offer_fits(offer: OfferWire) -> bool:
    """Whether an offer fits the room a frame keeps for it."""
    return (len(offer.target_path.encode("utf-8")) <= MAX_OFFER_PATH
            and len(offer.component) <= 16 and len(offer.version) <= 24)


def encode_frame(frame: Frame, chunk_size: int = DEFAULT_CHUNK_SIZE, *,
                 unsafe_unpadded: bool = False) -> bytes:
    """The frame as exactly :func:`frame_size` bytes (CBOR map, then zero bytes).

    ``unsafe_unpadded`` leaves the padding out, so the answer's size shows whether it
    carries a chunk: only for ``tinyward bench update`` to show what padding hides.

    Raises Misuse for data over ``chunk_size`` or an offer that does not fit (the caller
    leaves it out): a frame of another size would show on the wire.
    """
    size = frame_size(chunk_size)
    if len(frame.data) > chunk_size:
        raise Misuse(f"{len(frame.data)} bytes of data in a frame of {chunk_size}-byte chunks")
    if frame.status not in STATUSES:
        raise Misuse(f"unknown frame status {frame.status!r}")
    if frame.offer is not None and not offer_fits(frame.offer):
        raise Misuse("the offer does not fit in a frame (target path over "
                     f"{MAX_OFFER_PATH} bytes?)")
    document: dict[str, Any] = {
        "stored_seq": frame.stored_seq, "st": frame.status, "h": frame.handle,
        "off": frame.offset, "len": frame.total, "d": frame.data,
        "o": None if frame.offer is None else [frame.offer.component, frame.offer.target_path,
                                               frame.offer.version],
        "err": frame.error,
    }
    encoded = cbor2.dumps(document)
    if len(encoded) > size:
        raise Misuse(f"a frame needs {len(encoded)} bytes, over its fixed {size}")
    if unsafe_unpadded:
        return encoded
    return encoded + bytes(size - len(encoded))


def decode_frame(body: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE, *,
                 unsafe_unpadded: bool = False) -> Frame:
    """Parse a frame the server sent; :class:`BadServerAnswer` for anything malformed,
    including a frame of another size (the fleet and the device disagree on the chunk size).
    ``unsafe_unpadded`` accepts any size up to the frame's (the bench's control only)."""
    size = frame_size(chunk_size)
    if len(body) != size and not (unsafe_unpadded and len(body) < size):
        raise BadServerAnswer(f"an update frame is {size} bytes for {chunk_size}-byte chunks, "
                              f"not {len(body)}: do the fleet and the device agree on the "
                              "chunk size?")
    stream = io.BytesIO(body)
    try:
        document = cbor2.CBORDecoder(stream).decode()
    except (cbor2.CBORDecodeError, ValueError, OverflowError, RecursionError) as error:
        raise BadServerAnswer(f"the update frame is not CBOR: {error}") from None
    if any(body[stream.tell():]):
        raise BadServerAnswer("the update frame's padding is not zero bytes")
    try:
        return _frame_of(document, chunk_size)
    except (KeyError, TypeError, ValueError) as error:
        raise BadServerAnswer(f"the update frame is malformed: {error!r}") from None


def _frame_of(document: object, chunk_size: int) -> Frame:
    if not isinstance(document, dict):
        raise TypeError("not a map")
    stored, status, handle = document["stored_seq"], document["st"], document["h"]
    offset, total, data, offer, error = (document["off"], document["len"], document["d"],
                                         document["o"], document["err"])
    for name, value in (("stored_seq", stored), ("st", status), ("off", offset),
                        ("len", total)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} is not a count")
    if status not in STATUSES:
        raise ValueError(f"unknown status {status}")
    if not isinstance(handle, bytes) or len(handle) != HANDLE_BYTES:
        raise ValueError("the handle is not 32 bytes")
    if not isinstance(data, bytes) or len(data) > chunk_size:
        raise ValueError("the data is not a byte string of at most one chunk")
    if error is not None and not isinstance(error, str):
        raise ValueError("err is not text")
    wire = None
    if offer is not None:
        if (not isinstance(offer, list) or len(offer) != 3
                or not all(isinstance(part, str) for part in offer)):
            raise ValueError("the offer is not [component, path, version]")
        wire = OfferWire(*offer)
    return Frame(stored, status, handle, offset, total, data, wire, error)


class FetchChannel(Protocol):
    """What the runner needs from the device's update fetcher (update/fetcher.py).

    The runner calls :meth:`request` before every report it posts and :meth:`answer` with
    what came back (None when the exchange failed): one chunk per report, on the report's
    own schedule, never a request of its own.
    """

    def request(self) -> FetchRequest: ...

    def answer(self, request: FetchRequest, frame: Frame | None) -> None: ...


def delivery_seconds(length: int, interval: float, chunk_size: int = DEFAULT_CHUNK_SIZE,
                     metadata_chunks: int = 6) -> float:
    """Time to deliver a target of ``length`` bytes at one chunk per report:
    ``(ceil(length / chunk_size) + metadata_chunks) * interval``.

    ``metadata_chunks``: the TUF metadata before it (one probe for a newer root, timestamp,
    snapshot, a targets file of one or two chunks: 5 to 6 at 1 KiB).
    """
    check_chunk_size(chunk_size)
    return (math.ceil(length / chunk_size) + metadata_chunks) * interval


def delivery_bytes_per_hour(interval: float, chunk_size: int = DEFAULT_CHUNK_SIZE,
                            header_bytes: int = len(FETCH_HEADER) + 4 + 2 * _REQUEST_BYTES,
                            json_answer: int = 0) -> float:
    """What the delivery adds to a device's traffic per hour, whether it updates or not:
    the fetch header up, and the frame down in place of the ``json_answer`` it replaces
    (both at the TLS layer; the answer's HTTP head is unchanged but for the content type)."""
    return (header_bytes + frame_size(chunk_size) - json_answer) * 3600.0 / interval


__all__ = [
    "BAD_REQUEST", "CHUNK_CONTENT_TYPE", "DATA", "DEFAULT_CHUNK_SIZE", "FETCH_HEADER",
    "FRAME_OVERHEAD", "IDLE", "IDLE_REQUEST", "MAX_OFFER_PATH", "NOT_FOUND", "UNAVAILABLE",
    "FetchChannel", "FetchRequest", "Frame", "OfferWire", "decode_frame", "delivery_bytes_per_hour",
    "delivery_seconds", "encode_frame", "frame_size", "offer_fits", "path_handle",
]
