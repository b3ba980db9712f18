"""Errors of the update area.

Every refusal of an update is an :class:`UpdateRefused` subclass whose message says why in
words a person can act on; the running version is never touched by a refusal. The short
``code`` of each class is what a device puts in its next report (``upd.why``).
"""

from __future__ import annotations

from tinyward.errors import BadInput, StateError


class UpdateError(BadInput):
    """Base class of the update area's refusals of outside input."""

    code = "update-error"


class UpdateRefused(UpdateError):
    """An update was refused; the running version stays. ``code`` goes in the next report."""

    code = "refused"


class BadTargetMeta(UpdateRefused):
    """A target's custom metadata is missing, malformed or has unknown keys."""

    code = "bad-meta"


class WrongProduct(UpdateRefused):
    """The target is for another product class."""

    code = "wrong-product"


class NotForThisDevice(UpdateRefused):
    """The target names devices, and this device is not one of them."""

    code = "not-for-device"


class Rollback(UpdateRefused):
    """The target's version is not higher than the installed one (rollback or replay)."""

    code = "rollback"


class NeedsNewerTinyward(UpdateRefused):
    """The target needs a newer tinyward than the device runs."""

    code = "needs-newer-tinyward"


class UpdateBusy(UpdateError, StateError):
    """An update is already in progress on this device."""

    code = "busy"


# --- applying an update (update/slots.py, update/agent.py, update/health.py) ------------


class BadArchive(UpdateRefused):
    """An application archive is refused before anything is extracted from it: an
    absolute path, ``..``, a link or device, a duplicate name, or over a size or entry
    limit."""

    code = "bad-archive"


class SlotCorrupt(UpdateRefused):
    """The slot's content, read again before the switch, is not what TUF verified (length,
    hash, or an extracted file that differs from the archive)."""

    code = "slot-corrupt"


class TooLong(UpdateRefused):
    """The target file is longer (or shorter) than its signed length."""

    code = "length"


class TrialFailed(UpdateRefused):
    """The new version failed its health check in trial and was reverted."""

    code = "health-failed"


class TrialCrashed(TrialFailed):
    """The new application crashed (or did not start) during its trial."""

    code = "crashed"


class TrialDeadline(TrialFailed):
    """The new version did not prove itself healthy before the trial's deadline."""

    code = "deadline"


class TrialContract(TrialFailed):
    """The new application emitted results off its output contract during its trial."""

    code = "contract"


class TrialLinkDown(TrialFailed):
    """The link did not reach the fleet from the new version during its trial."""

    code = "link-down"


class UpdateIOError(UpdateError):
    """A local failure (disk full, permission) while applying; the running version stays."""

    code = "io-error"


class UpdateStorageTampered(UpdateError):
    """A record the update relies on (the anti-rollback counter, the slot record) is
    missing, altered or rolled back in protected storage: nothing is installed (fail
    closed) and the fleet is told."""

    code = "tampered"


class UnsafeSlots(UpdateError):
    """The slots folder is one that someone other than the core could change (a symbolic
    link, group- or world-writable, owned by another user, below such a folder), or not
    the folder recorded when the installed versions were written. Raised to the caller:
    a device set up like this must not apply updates."""

    code = "slots-unsafe"


# -- refusals while fetching and verifying through TUF (update/client.py maps python-tuf's
# exceptions onto these; every one leaves the running version untouched) ------------------


class BadSignature(UpdateRefused):
    """Metadata is not signed by a threshold of the keys its role delegates (a bad or
    missing signature, or a key not delegated for the role, such as the fleet's CA key)."""

    code = "bad-signature"


class MetadataRollback(UpdateRefused):
    """Metadata older than what the device has seen, or a version other than the one the
    signed metadata above it names (rollback, fast-forward, mix-and-match)."""

    code = "metadata-version"


class ExpiredMetadata(UpdateRefused):
    """Metadata past its expiry date (freeze attack, or a fleet that stopped signing)."""

    code = "expired"


class BadMetadata(UpdateRefused):
    """Metadata that TUF refuses for another reason (malformed, wrong type, bad hash)."""

    code = "bad-metadata"


class EndlessData(UpdateRefused):
    """The server sent more bytes than the signed metadata allows (endless data)."""

    code = "too-long"


class BadDownload(UpdateRefused):
    """The downloaded file's length or hashes differ from the signed metadata (truncated,
    corrupted or substituted)."""

    code = "bad-download"


class SlowRetrieval(UpdateRefused):
    """The server stopped sending chunks (or sent them too slowly) during a download."""

    code = "slow-retrieval"


class NoSuchTarget(UpdateRefused):
    """The offered target is not in the fleet's signed targets metadata."""

    code = "no-such-target"


class OfferMismatch(UpdateRefused):
    """The signed metadata of the offered target names another component or version than
    the fleet's (unsigned) offer."""

    code = "offer-mismatch"


class DownloadFailed(UpdateRefused):
    """The download failed (the repository is unavailable, or a file is missing)."""

    code = "download-failed"


class ApplyFailed(UpdateRefused):
    """The verified target could not be handed to the slot agent (its own failure)."""

    code = "apply-failed"
