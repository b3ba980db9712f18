"""A ``tuf.ngclient`` fetcher whose only network is the device's report link.

The stock :class:`tuf.ngclient.Updater` does every check (signatures, thresholds,
versions, expiry, lengths, hashes); this module only moves bytes. It has two halves:

- :class:`ChunkChannel`, shared by two threads: the updater's thread asks for one chunk
  (:meth:`ChunkChannel.get`) and waits; the runner's thread puts that request on its next
  report (:meth:`ChunkChannel.request`) and hands the answer back
  (:meth:`ChunkChannel.answer`). It implements :class:`tinyward.link.chunks.FetchChannel`.
  No second connection, no request of its own: one chunk per report, on the report schedule.
- :class:`ChunkFetcher`, the :class:`tuf.ngclient.FetcherInterface` the updater uses: a
  URL ``tinyward:/metadata/…`` or ``tinyward:/targets/…`` becomes a series of chunk
  requests for that repository path.

Every wait is bounded: a chunk that does not come within ``max_misses`` answered reports,
or within ``timeout`` seconds when no report gets through, ends the download with
:class:`tuf.api.exceptions.SlowRetrievalError` (TUF's slow-retrieval defence: a server
cannot hold a device in a download forever). A short chunk before the end of the file is
refused the same way: a server may not trickle. A whole download (metadata and target)
must also end by the fetcher's ``deadline``: a server that answers every chunk just in time
still cannot keep a device downloading forever. A chunk that runs past the length the
fleet declared for the file (``total``), or a length that changes mid-download, is a
:class:`tuf.api.exceptions.DownloadError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from tuf.api import exceptions as tuf_errors
from tuf.ngclient.fetcher import FetcherInterface

from tinyward.errors import BadInput
from tinyward.link import chunks
from tinyward.update.meta import COMPONENTS, Offer, Version

log = logging.getLogger("tinyward.update")

#: The base URLs an Updater is given; the fetcher maps them onto repository paths.
METADATA_URL = "tinyward:/metadata/"
TARGETS_URL = "tinyward:/targets/"
_PREFIX = "tinyward:/"


class ChunkChannel:
    """One outstanding chunk request between the updater thread and the runner."""

    def __init__(self, on_offer: Callable[[Offer], None] | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.on_offer = on_offer
        self._clock = clock
        self._cond = threading.Condition()
        self._want = chunks.IDLE_REQUEST
        self._got: chunks.Frame | None = None
        self._misses = 0
        self._closed = False
        self.exchanges = 0  # reports sent with a request (answered or not): tests, status
        self.frames = 0  # of which answered with a frame

    # -- the runner's side (chunks.FetchChannel) ------------------------------------------

    def request(self) -> chunks.FetchRequest:
        with self._cond:
            return self._want

    def answer(self, request: chunks.FetchRequest, frame: chunks.Frame | None) -> None:
        if frame is not None and frame.offer is not None and self.on_offer is not None:
            offer = _offer_of(frame.offer)
            if offer is not None:
                self.on_offer(offer)
        with self._cond:
            self.exchanges += 1
            self.frames += frame is not None
            if request.idle or request != self._want:
                return  # a filler, or the answer to a request given up on
            if frame is not None and frame.answers(request):
                self._got = frame
            elif frame is not None:
                self._misses += 1  # answered, without what was asked
            self._cond.notify_all()

    # -- the updater's side -------------------------------------------------------------

    def get(self, request: chunks.FetchRequest, timeout: float,
            max_misses: int) -> chunks.Frame | None:
        """Ask for one chunk and wait for it: the frame, or None after ``max_misses``
        reports answered without it, ``timeout`` seconds, or :meth:`close`."""
        deadline = self._clock() + timeout
        with self._cond:
            self._want, self._got, self._misses = request, None, 0
            try:
                while self._got is None and not self._closed and self._misses < max_misses:
                    left = deadline - self._clock()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, 1.0))
                return self._got
            finally:
                self._want, self._got = chunks.IDLE_REQUEST, None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake a waiting fetch: it gives up (the device is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _offer_of(wire: chunks.OfferWire) -> Offer | None:
    if wire.component not in COMPONENTS:
        # Taken up, it would stand in every report's ``upd`` (``tgt``), which the report
        # schema refuses: the reports would go out without their update status.
        log.warning("the fleet offered an unknown component %r; ignored", wire.component[:16])
        return None
    try:
        return Offer(wire.component, wire.target_path, Version.parse(wire.version))
    except BadInput:
        log.warning("the fleet offered a target with a malformed version; ignored")
        return None


class ChunkFetcher(FetcherInterface):
    """``tuf.ngclient`` fetcher over :class:`ChunkChannel` (see module docstring)."""

    def __init__(self, channel: ChunkChannel, *, chunk_size: int = chunks.DEFAULT_CHUNK_SIZE,
                 timeout: float = 60.0, max_misses: int = 3, deadline: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        chunks.check_chunk_size(chunk_size)
        if timeout <= 0 or max_misses < 1:
            raise ValueError("timeout and max_misses must be positive")
        self.channel = channel
        self.chunk_size = chunk_size
        self.timeout = timeout
        self.max_misses = max_misses
        #: ``clock()`` time by which every fetch must be over (None: no overall bound).
        self.deadline = deadline
        self._clock = clock
        self.fetched = 0  # bytes received, for status and the bench

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(_PREFIX):
            raise tuf_errors.DownloadError(f"not a tinyward repository URL: {url[:80]!r}")
        path = url[len(_PREFIX):]
        if not path.startswith(("metadata/", "targets/")):
            raise tuf_errors.DownloadError(f"not a repository path: {path[:80]!r}")
        return self._chunks(path, chunks.path_handle(path))

    def _chunks(self, path: str, handle: bytes) -> Iterator[bytes]:
        offset, total = 0, None
        while True:
            timeout = self.timeout
            if self.deadline is not None:
                left = self.deadline - self._clock()
                if left <= 0:
                    raise tuf_errors.SlowRetrievalError(
                        f"the download ran past its overall deadline (at {path} byte "
                        f"{offset}): the server is too slow")
                timeout = min(timeout, left)
            frame = self.channel.get(chunks.FetchRequest(handle, offset), timeout,
                                     self.max_misses)
            if frame is None and self.channel.closed:
                raise tuf_errors.DownloadError("the device is stopping")
            if frame is None:
                raise tuf_errors.SlowRetrievalError(
                    f"no chunk of {path} at offset {offset} within {self.max_misses} reports "
                    f"or {self.timeout:.0f} s: the server stopped sending")
            if frame.status == chunks.NOT_FOUND:
                raise tuf_errors.DownloadHTTPError(f"{path} is not in the fleet's repository",
                                                   404)
            if frame.status != chunks.DATA:
                raise tuf_errors.DownloadError(f"the fleet could not send {path} "
                                               f"(frame status {frame.status})")
            if total is None:
                total = frame.total
            elif frame.total != total:
                raise tuf_errors.DownloadError(f"{path} changed length during the download")
            data = frame.data
            end = offset + len(data)
            if end > total:
                # Bytes past the fleet's own declared end are not the file's.
                raise tuf_errors.DownloadError(
                    f"a chunk of {path} runs to byte {end}, past the {total} bytes the "
                    "fleet declared")
            if end < total and len(data) != self.chunk_size:
                # A trickle (or nothing) before the end: slow retrieval, refused at once.
                raise tuf_errors.SlowRetrievalError(
                    f"a chunk of {len(data)} bytes before the end of {path}: the server "
                    "is trickling")
            if data:
                self.fetched += len(data)
                yield data
            if end >= total:
                return
            offset = end


__all__ = ["METADATA_URL", "TARGETS_URL", "ChunkChannel", "ChunkFetcher"]
