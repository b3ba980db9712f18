"""Errors of the trusted core.

Bad state on disk or bad bytes from outside are :class:`~tinyward.errors.BadInput`
subclasses, one per attack or failure, so that a test can name the attack it expects.
Asking the core for something its policy forbids is :class:`PolicyViolation` (a caller bug
or a compromised caller — never silently allowed).
"""

from tinyward.errors import BadInput, Misuse


class StorageError(BadInput):
    """Protected storage refused to return a record (it never returns unverified data)."""


class RecordMissing(StorageError):
    """The record does not exist (or was deleted although its counter says it existed)."""


class RecordTampered(StorageError):
    """The record failed authentication: flipped, truncated, or swapped from another name."""


class RecordRolledBack(StorageError):
    """The record is authentic but older than its version counter: a rollback."""


class CountersTampered(StorageError):
    """The version-counter file failed its integrity check."""


class RootOfTrustError(BadInput):
    """The root of trust is missing, unreadable or malformed."""


class KeystoreError(BadInput):
    """The keystore could not complete an operation on stored key material."""


class SealBroken(BadInput):
    """A sealed blob failed authentication (altered, another label, or another device)."""


class UnknownKey(Misuse):
    """No key with that handle exists in this keystore."""


class KeyExists(Misuse):
    """A key with that name already exists; keys are never silently replaced."""


class PolicyViolation(Misuse):
    """The key's usage policy does not allow the requested operation."""
