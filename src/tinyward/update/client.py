"""The device's update client: take the fleet's offer, fetch and verify it through TUF.

The fleet's offer (:class:`~tinyward.update.meta.Offer`, unsigned, from the link) only
*names* a target. The stock :class:`tuf.ngclient.Updater`, anchored on the update root from
the device bundle (``Device.update_trusted_root()``), fetches the metadata and the target
over the report link (:mod:`tinyward.update.fetcher`) and verifies them; then the target's
signed custom metadata must allow this device (:meth:`TargetMeta.check_installable`: product
class, devices, a higher version, minimum tinyward). Only a verified file reaches
``on_verified(component, path, meta, length, hashes)`` (the A/B slot agent,
``UpdateAgent.apply``). Every refusal leaves the running version untouched and is kept as
the ``why`` of :meth:`UpdateClient.status`, which the runner puts in its next report
(``upd``).

One download at a time, in a thread of its own (the report loop never waits for it). A
target whose download *failed* (no answer, too slow, past the overall deadline, a link
error) or whose metadata had expired is offered again after a backoff that doubles from
``retry_after`` to ``max_retry_after``; one that was *refused* (bad signature, rollback,
wrong product, a file that does not match its signed hashes…) is not tried again until the
fleet offers another target (or the device restarts).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_errors
from tuf.ngclient.updater import Updater

from tinyward import __version__ as _tinyward_version
from tinyward._backoff import Backoff
from tinyward.update import errors
from tinyward.update.fetcher import METADATA_URL, TARGETS_URL, ChunkChannel, ChunkFetcher
from tinyward.update.meta import COMPONENTS, Offer, TargetMeta, Version

log = logging.getLogger("tinyward.update")

#: The A/B agent's entry point: (component, verified file, its signed meta, length, hashes).
#: It must take the file (copy or move it) before it returns: the download folder is
#: emptied when the next download starts.
OnVerified = Callable[[str, Path, TargetMeta, int, Mapping[str, str]], None]
Installed = Callable[[str], Version | None]


@dataclass(frozen=True)
class UpdateClientConfig:
    """``chunk_size`` must be the fleet's; a chunk must come within ``max_misses`` answered
    reports and ``chunk_timeout`` seconds, and a whole download within ``download_deadline``
    seconds (slow retrieval). A failed download is tried again after ``retry_after``
    seconds, doubling up to ``max_retry_after``.

    The deadline's default (one day) fits a 4 MB target at 1 KiB per report every 10 s
    (about 11 hours, metadata included) twice over."""

    chunk_size: int = 1024
    chunk_timeout: float = 120.0
    max_misses: int = 3
    download_deadline: float = 24 * 3600.0
    retry_after: float = 60.0
    max_retry_after: float = 3600.0


def refusal_of(error: BaseException) -> errors.UpdateRefused:
    """python-tuf's exception (or ours) as the refusal whose ``code`` goes into ``upd.why``."""
    if isinstance(error, errors.UpdateRefused):
        return error
    text = str(error) or type(error).__name__
    table: tuple[tuple[type[BaseException], type[errors.UpdateRefused]], ...] = (
        (tuf_errors.UnsignedMetadataError, errors.BadSignature),
        (tuf_errors.BadVersionNumberError, errors.MetadataRollback),
        (tuf_errors.ExpiredMetadataError, errors.ExpiredMetadata),
        (tuf_errors.LengthOrHashMismatchError, errors.BadDownload),
        (tuf_errors.RepositoryError, errors.BadMetadata),
        (tuf_errors.DownloadLengthMismatchError, errors.EndlessData),
        (tuf_errors.SlowRetrievalError, errors.SlowRetrieval),
        (tuf_errors.DownloadError, errors.DownloadFailed),
    )
    for tuf_type, ours in table:
        if isinstance(error, tuf_type):
            return ours(text)
    return errors.DownloadFailed(text)


def _tinyward_version_now() -> Version:
    try:
        return Version.parse(".".join(_tinyward_version.split(".")[:3]))
    except errors.UpdateError:
        return Version(0, 0, 0)


class UpdateClient:
    """Fetches and verifies offered targets for one device (see module docstring)."""

    def __init__(self, *, device_id: str, trusted_root: bytes, product_class: str,
                 workdir: Path, on_verified: OnVerified,
                 installed: Installed = lambda component: None,
                 tinyward_version: Version | None = None,
                 config: UpdateClientConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.device_id = device_id
        self.product_class = product_class
        self.config = config or UpdateClientConfig()
        self._root = bytes(trusted_root)
        self._workdir = Path(workdir)
        self._on_verified = on_verified
        self._installed = installed
        self._tinyward = tinyward_version or _tinyward_version_now()
        self.channel = ChunkChannel(on_offer=self.offer)
        self._lock = threading.Lock()
        self._state = "idle"
        self._why: str | None = None
        self._clock = clock
        self._tried: str | None = None  # the target path of the last offer taken up
        self._retry_at: float | None = None  # when a failed download of it may run again
        # No jitter: a try costs the fleet nothing extra (its chunks ride on the reports).
        self._backoff = Backoff(self.config.retry_after, self.config.max_retry_after,
                                jitter=False)
        self._target: Offer | None = None  # the offer the state is about
        self._thread: threading.Thread | None = None
        self.last_error: errors.UpdateRefused | None = None
        self.delivered: list[Path] = []

    @classmethod
    def for_device(cls, device: Any, on_verified: OnVerified, *,
                   installed: Installed = lambda component: None,
                   config: UpdateClientConfig | None = None) -> UpdateClient | None:
        """The client of a provisioned device, or None if its bundle carries no update
        root or product class (a fleet without signed updates)."""
        root_of = getattr(device, "update_trusted_root", None)
        class_of = getattr(device, "product_class", None)
        root = root_of() if callable(root_of) else None
        product = class_of() if callable(class_of) else None
        if not root or not product:
            return None
        return cls(device_id=device.device_id, trusted_root=root, product_class=product,
                   workdir=Path(device.directory) / "update", on_verified=on_verified,
                   installed=installed, config=config)

    # -- status (the report's ``upd``) ----------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``{"state": …, "ver": {component: "x.y.z"}, "why": code, "tgt": {component:
        "x.y.z"}}`` (the report's ``upd``; why only after a refusal or failure, tgt once an
        offer was taken up)."""
        versions = {}
        for component in COMPONENTS:
            version = self._installed(component)
            if version is not None:
                versions[component] = str(version)
        with self._lock:
            status: dict[str, Any] = {"state": self._state, "ver": versions}
            if self._why is not None:
                status["why"] = self._why
            if self._target is not None:
                status["tgt"] = {self._target.component: str(self._target.version)}
        return status

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    # -- offers ---------------------------------------------------------------------------

    def offer(self, offer: Offer) -> None:
        """Take up the fleet's offer (called from the runner's thread): start a download in
        a thread unless one is running or this target was already taken up."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if offer.target_path == self._tried and (
                    self._retry_at is None or self._clock() < self._retry_at):
                return  # refused for good, or its retry is not due yet
            if offer.target_path != self._tried:
                self._backoff.reset()
            self._retry_at = None
            installed = self._installed(offer.component)
            if installed is not None and offer.version == installed:
                return  # already here (the fleet has not read our report yet)
            self._tried, self._target = offer.target_path, offer
            if installed is not None and offer.version < installed:
                # An older version offered: refused without fetching anything, and said.
                self._refused(errors.Rollback(
                    f"the fleet offered {offer.component} {offer.version}, older than the "
                    f"installed {installed}"), "rejected", locked=True)
                return
            self._state, self._why = "downloading", None
            self._thread = threading.Thread(target=self._run_quietly, args=(offer,),
                                            name="tinyward-update", daemon=True)
            self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def close(self) -> None:
        """Stop waiting for chunks (the device is stopping); the download fails quietly."""
        self.channel.close()
        self.join(5.0)

    def _run_quietly(self, offer: Offer) -> None:
        try:
            self.run(offer)
        except errors.UpdateRefused:
            pass  # kept in status
        except Exception:
            log.exception("the update of %s failed", offer.component)

    # -- the work -------------------------------------------------------------------------

    def run(self, offer: Offer) -> Path:
        """Fetch, verify and hand over one offered target (synchronously); returns the
        verified file. Raises UpdateRefused (kept in :meth:`status`)."""
        with self._lock:
            self._state, self._why, self._target = "downloading", None, offer
        try:
            path, meta, length, hashes = self._fetch_verified(offer)
        except Exception as error:
            refusal = refusal_of(error)
            failed = isinstance(refusal, errors.SlowRetrieval | errors.DownloadFailed)
            self._refused(refusal, "failed" if failed else "rejected")
            if (failed or isinstance(refusal, errors.ExpiredMetadata)) \
                    and not self.channel.closed:
                self._schedule_retry()
            raise refusal from error
        with self._lock:
            self._state = "staged"
        self.delivered.append(path)
        try:
            self._on_verified(meta.component, path, meta, length, hashes)
        except errors.UpdateRefused as refusal:
            self._refused(refusal, "rejected")
            raise
        except Exception as error:
            # The agent failed (a bug, a full disk): said, not silent; the slot is its job.
            self._refused(errors.ApplyFailed(f"handing the verified target over failed: "
                                             f"{error!r}"), "failed")
            raise
        return path

    def _schedule_retry(self) -> None:
        """Let the same offer start again after the backoff (a passing fault; the fleet's
        refreshed metadata)."""
        with self._lock:
            self._retry_at = self._clock() + self._backoff.next_delay()

    def _refused(self, refusal: errors.UpdateRefused, state: str, locked: bool = False) -> None:
        quiet = self.channel.closed  # the device is stopping: not news
        (log.info if quiet else log.warning)("update refused (%s): %s", refusal.code, refusal)
        if locked:
            self._state, self._why, self.last_error = state, refusal.code, refusal
            return
        with self._lock:
            self._state, self._why, self.last_error = state, refusal.code, refusal

    def _fetch_verified(self, offer: Offer) -> tuple[Path, TargetMeta, int, dict[str, str]]:
        metadata_dir = self._workdir / "metadata"
        targets_dir = self._workdir / "download"
        metadata_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if targets_dir.exists():
            shutil.rmtree(targets_dir)  # nothing half-fetched is ever reused
        targets_dir.mkdir(parents=True, mode=0o700)
        fetcher = ChunkFetcher(self.channel, chunk_size=self.config.chunk_size,
                               timeout=self.config.chunk_timeout,
                               max_misses=self.config.max_misses,
                               deadline=self._clock() + self.config.download_deadline,
                               clock=self._clock)
        # The bundle's root is the trust anchor on every run; the cached root history in
        # the device folder is only used through the signed chain that starts from it.
        updater = Updater(str(metadata_dir), METADATA_URL, str(targets_dir), TARGETS_URL,
                          fetcher=fetcher, bootstrap=self._root)
        updater.refresh()
        info = updater.get_targetinfo(offer.target_path)
        if info is None:
            raise errors.NoSuchTarget(f"{offer.target_path!r} is not in the fleet's signed "
                                      "targets")
        meta = TargetMeta.from_custom(info.custom)
        # The signed facts decide (product, devices, rollback), then the unsigned offer
        # must agree with them.
        meta.check_installable(product_class=self.product_class, device_id=self.device_id,
                               installed=self._installed(meta.component),
                               tinyward_version=self._tinyward)
        if meta.component != offer.component or meta.version != offer.version:
            raise errors.OfferMismatch(
                f"the signed target is {meta.component} {meta.version}, the offer said "
                f"{offer.component} {offer.version}")
        path = Path(updater.download_target(info, str(targets_dir / "target")))
        return path, meta, info.length, dict(info.hashes)


__all__ = ["OnVerified", "UpdateClient", "UpdateClientConfig", "refusal_of"]
