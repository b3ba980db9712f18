"""The fleet side of update delivery: one chunk of the TUF repository per report.

A device's every report carries a fixed-width fetch request (:mod:`tinyward.link.chunks`);
the server answers every one with a frame of one fixed size: a chunk of the file asked for,
or filler. So the server reads at most one chunk per report it accepts, and the rate limit
on reports (each device's declared schedule) is the rate limit on delivery: nothing else to
tune, and no endpoint a device could hammer.

Bounded: a device can read only the regular files directly under the repository's
``metadata/`` and ``targets/`` folders (the fleet's TUF repository,
``FLEET_DIR/updates/repo``). They are named by the SHA-256 of their repository-relative
path, looked up in an allow-list built from a listing of those folders (never a path
from the device): no traversal, no symlinks, nothing outside the repository. What the files
say is TUF's business: the device verifies everything it reads, so this server needs no
keys and is not trusted.

The offer (what this device should install, :class:`~tinyward.update.meta.Offer`) comes
from a hook, ``offers(device_id, installed_versions)`` (the rollout's decision,
``FleetServer.offer_for`` over :mod:`tinyward.fleet.rollout`; the installed versions are
those of the report the frame answers), and rides in the same frame.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tinyward.link import chunks
from tinyward.update.meta import Offer

_log = logging.getLogger("tinyward.fleet.delivery")
#: The folders a device may read, relative to the repository.
SERVED_FOLDERS = ("metadata", "targets")
MAX_FILES = 100_000

#: (device ID, installed versions ``{component: "x.y.z"}`` from its report) -> offer or None.
OfferHook = Callable[[str, Mapping[str, str]], Offer | None]


def repository_dir(fleet_dir: Path) -> Path:
    """Where a fleet keeps its TUF repository (tinyward.fleet.update_repo)."""
    return Path(fleet_dir) / "updates" / "repo"


def no_offers(device_id: str, installed: Mapping[str, str]) -> Offer | None:
    return None


@dataclass(frozen=True)
class DeliveryConfig:
    """``chunk_size``: bytes of data per frame (the device must use the same);
    ``rescan_after``: seconds between rescans of the repository triggered by an unknown
    handle (a file published since the last listing)."""

    chunk_size: int = chunks.DEFAULT_CHUNK_SIZE
    rescan_after: float = 1.0
    #: Frames without padding (their size shows a chunk): ``tinyward bench update``'s
    #: control only, never on a fleet.
    unsafe_unpadded: bool = False

    def __post_init__(self) -> None:
        chunks.check_chunk_size(self.chunk_size)


class ChunkServer:
    """Answers fetch requests from the files of one TUF repository (see module docstring)."""

    def __init__(self, repo: Path, config: DeliveryConfig | None = None,
                 offers: OfferHook = no_offers, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.repo = Path(repo)
        self.config = config or DeliveryConfig()
        self.offers = offers
        self._monotonic = monotonic
        self._files: dict[bytes, Path] = {}
        self._stamp: tuple[int, ...] | None = None
        self._scanned_at = float("-inf")
        self._lock = threading.Lock()

    @property
    def frame_size(self) -> int:
        return chunks.frame_size(self.config.chunk_size)

    # -- the allow-list -----------------------------------------------------------------

    def _folder_stamp(self) -> tuple[int, ...]:
        stamp: list[int] = []
        for name in SERVED_FOLDERS:
            try:
                info = os.stat(self.repo / name)
            except OSError:
                stamp.append(-1)
            else:
                stamp.extend((info.st_ino, info.st_mtime_ns))
        return tuple(stamp)

    def _scan(self) -> None:
        files: dict[bytes, Path] = {}
        for name in SERVED_FOLDERS:
            folder = self.repo / name
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries[:MAX_FILES]:
                # Regular files only, symlinks not followed: nothing outside the repository.
                if entry.is_file(follow_symlinks=False):
                    files[chunks.path_handle(f"{name}/{entry.name}")] = folder / entry.name
        self._files = files
        self._scanned_at = self._monotonic()

    def _lookup(self, handle: bytes) -> Path | None:
        with self._lock:
            stamp = self._folder_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                self._scan()
            found = self._files.get(handle)
            if found is None and self._monotonic() - self._scanned_at >= self.config.rescan_after:
                self._scan()  # e.g. a target in a folder whose time did not change
                found = self._files.get(handle)
            return found

    # -- answering ----------------------------------------------------------------------

    def _offer(self, device_id: str, installed: Mapping[str, str] | None
               ) -> chunks.OfferWire | None:
        if installed is None:
            return None  # nothing known of what the device runs (a report sent again)
        try:
            offer = self.offers(device_id, installed)
        except Exception:  # noqa: BLE001 - a rollout bug must not cost the report its ack
            _log.exception("the offer hook failed for a device")
            return None
        if offer is None:
            return None
        wire = chunks.OfferWire(offer.component, offer.target_path, str(offer.version))
        if not chunks.offer_fits(wire):
            _log.warning("an offer for %s does not fit a frame (target path over %d bytes); "
                         "not offered", offer.target_path[:80], chunks.MAX_OFFER_PATH)
            return None
        return wire

    def _read(self, request: chunks.FetchRequest) -> tuple[int, int, bytes]:
        """(status, total length, data) for a non-idle request."""
        if request.handle is None:
            return chunks.IDLE, 0, b""
        path = self._lookup(request.handle)
        if path is None:
            return chunks.NOT_FOUND, 0, b""
        try:
            # Non-blocking: a FIFO put there after the listing must not hang the answer.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                         | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return chunks.NOT_FOUND, 0, b""
        except OSError as error:
            _log.warning("cannot open %s for delivery: %s", path.name, error)
            return chunks.UNAVAILABLE, 0, b""
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return chunks.NOT_FOUND, 0, b""
            if request.offset > info.st_size:
                return chunks.BAD_REQUEST, info.st_size, b""
            data = os.pread(fd, self.config.chunk_size, request.offset)
            return chunks.DATA, info.st_size, data
        except OSError as error:
            _log.warning("cannot read %s for delivery: %s", path.name, error)
            return chunks.UNAVAILABLE, 0, b""
        finally:
            os.close(fd)

    def _same_work(self) -> None:
        """Do what serving a chunk does (look up, open, read one chunk), and discard it:
        an idle answer must not come back measurably sooner than a chunk (about 30 µs
        apart without this, on loopback)."""
        with self._lock:
            # Any served file (none yet: a lookup that lists the folders, as a chunk's would).
            handle = next(iter(self._files), bytes(chunks.HANDLE_BYTES))
        self._read(chunks.FetchRequest(handle, 0))

    def answer(self, device_id: str, header: str, stored_seq: int,
               error: str | None = None, installed: Mapping[str, str] | None = None) -> bytes:
        """The frame answering one report's fetch request ``header`` (its raw value).
        ``installed``: the versions the report says run (None: no offer is made).

        Never raises for what the device sent: a malformed request gets a BAD_REQUEST frame
        (the report it came with is stored all the same).
        """
        offer = self._offer(device_id, installed)
        try:
            request = chunks.FetchRequest.parse(header)
        except ValueError:
            frame = chunks.Frame(stored_seq, chunks.BAD_REQUEST, offer=offer, error=error)
        else:
            if request.idle or request.handle is None:
                self._same_work()
                frame = chunks.Frame(stored_seq, chunks.IDLE, offer=offer, error=error)
            else:
                status, total, data = self._read(request)
                frame = chunks.Frame(stored_seq, status, request.handle, request.offset,
                                     total, data, offer, error)
        return chunks.encode_frame(frame, self.config.chunk_size,
                                   unsafe_unpadded=self.config.unsafe_unpadded)


__all__ = ["SERVED_FOLDERS", "ChunkServer", "DeliveryConfig", "OfferHook", "no_offers",
           "repository_dir"]
