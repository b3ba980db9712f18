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
