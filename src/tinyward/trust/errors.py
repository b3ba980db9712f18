"""Errors of the trusted core (:mod:`tinyward.trust`).

Two families, kept apart as everywhere in tinyward:

- :class:`BadToken` and its subclasses derive from :class:`tinyward.errors.BadInput`: an
  attestation token from outside was refused. There is one class per reason, so a caller
  (the fleet, the CLI) can say *why* without parsing messages.
- :class:`TokenMisuse` and :class:`MeasurementError` derive from
  :class:`tinyward.errors.Misuse`: the caller asked for something impossible (claims that
  would make an invalid token, a nonce of a size the profile forbids, a missing file).

A third family, :class:`tinyward.errors.StateError`, covers a request that does not fit a
device's state (``DeviceExists``, ``AlreadyProvisioned``, ``NotProvisioned``,
``NoCredential``, in the modules that raise them).

Everything derives from :class:`TrustError`, so ``except TrustError`` catches the lot
(``tests/test_error_family.py`` checks every class in :mod:`tinyward.trust`).
"""

from __future__ import annotations

from tinyward.errors import BadInput, Misuse, TinywardError


class TrustError(TinywardError):
    """Base class of every error raised by :mod:`tinyward.trust`."""


# --- refused input --------------------------------------------------------------------


class BadToken(TrustError, BadInput):
    """An attestation token was refused. Subclasses say why."""


class MalformedToken(BadToken):
    """The bytes are not a COSE_Sign1 (ES256) PSA token: too long, not CBOR, wrong shape."""


class TruncatedToken(MalformedToken):
    """The bytes start like a PSA token (a tagged COSE_Sign1) but end before it does."""


class BadTokenSignature(BadToken):
    """The token's signature does not verify with the key the verifier expected."""


class ClaimError(BadToken):
    """A claim in the claim set breaks RFC 9783 (or tinyward's private claim rules).

    ``claim`` is the claim's name (e.g. ``"boot_seed"``), ``key`` its CWT claim key
    (e.g. 268). For a software-component attribute, ``field`` names the attribute
    (e.g. ``"measurement_value"``) and ``index`` the component's position in the list.
    """

    def __init__(
        self,
        claim: str,
        key: int,
        detail: str,
        *,
        field: str | None = None,
        index: int | None = None,
    ) -> None:
        self.claim = claim
        self.key = key
        self.field = field
        self.index = index
        self.detail = detail
        where = f"claim {claim} ({key})"
        if index is not None:
            where += f", software component {index}"
        if field is not None:
            where += f", attribute {field}"
        super().__init__(f"{where}: {detail}")


class MissingClaim(ClaimError):
    """A claim (or software-component attribute) that RFC 9783 makes mandatory is absent."""


class BadClaim(ClaimError):
    """A claim is present but has the wrong type, size or value."""


class NonceMismatch(BadToken):
    """The token's nonce is not the one the verifier sent: stale or replayed."""


class InstanceIdMismatch(BadToken):
    """The token's Instance ID does not belong to the key that verified it."""


class UntrustedLifecycle(BadToken):
    """The token is genuine but the device's security lifecycle state is not trusted."""


# --- caller bugs ------------------------------------------------------------------------


class TokenMisuse(TrustError, Misuse):
    """An attestation API was called with an argument it cannot accept."""


class InvalidClaims(TokenMisuse):
    """``encode_token`` was given claims that would not make a valid PSA token."""


class MeasurementError(TrustError, Misuse):
    """Software could not be measured (a path is missing, unreadable or of an odd kind)."""


# --- protected storage, root of trust, keystore -------------------------------------------


class StorageError(TrustError, BadInput):
    """Protected storage refused to return a record (it never returns unverified data)."""


class RecordMissing(StorageError):
    """The record does not exist (or was deleted although its counter says it existed)."""


class RecordTampered(StorageError):
    """The record failed authentication: flipped, truncated, or swapped from another name."""


class RecordRolledBack(StorageError):
    """The record is authentic but older than its version counter: a rollback."""


class CountersTampered(StorageError):
    """The version-counter file failed its integrity check."""


class RootOfTrustError(TrustError, BadInput):
    """The root of trust is missing, unreadable or malformed."""


class KeystoreError(TrustError, BadInput):
    """The keystore could not complete an operation on stored key material."""


class SealBroken(TrustError, BadInput):
    """A sealed blob failed authentication (altered, another label, or another device)."""


class UnknownKey(TrustError, Misuse):
    """No key with that handle exists in this keystore."""


class KeyExists(TrustError, Misuse):
    """A key with that name already exists; keys are never silently replaced."""


class PolicyViolation(TrustError, Misuse):
    """The key's usage policy does not allow the requested operation (a caller bug or a
    compromised caller — never silently allowed)."""
