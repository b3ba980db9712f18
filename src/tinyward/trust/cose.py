"""COSE_Sign1 with ES256 (RFC 9052 §4.2, RFC 9053 §2.1), sans-IO.

Every signed thing tinyward sends — attestation tokens, reports, update manifests — is a
COSE_Sign1 message. This module is the one place that builds and checks them, so the
rules live once:

- The only algorithm is ES256 (ECDSA P-256 with SHA-256, COSE alg -7). An unknown or
  missing algorithm in the *protected* header is refused: fail closed.
- The signature is the 64-byte ``r || s`` form COSE requires (not DER).
- Decoding takes hostile bytes and a size limit; anything other than a well-formed
  COSE_Sign1 raises :class:`MalformedCose`, a bad signature :class:`BadSignature`.

CBOR itself comes from ``cbor2`` and ECDSA from ``cryptography``: nothing is hand-rolled.
Signing goes through a :class:`Signer` so that private keys stay in the keystore.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from tinyward.errors import BadInput
from tinyward.trust.errors import TrustError

COSE_SIGN1_TAG = 18
HEADER_ALG = 1
HEADER_CONTENT_TYPE = 3
HEADER_KID = 4
ALG_ES256 = -7
ES256_SIGNATURE_BYTES = 64
DEFAULT_MAX_BYTES = 64 * 1024


class MalformedCose(TrustError, BadInput):
    """The bytes are not a well-formed COSE_Sign1 message tinyward accepts."""


class TruncatedCose(MalformedCose):
    """The CBOR ends before its item does: a cut-off message (or bytes that only look like CBOR)."""


class BadSignature(TrustError, BadInput):
    """The COSE_Sign1 signature does not verify with the given public key."""


class Signer(Protocol):
    """Signs with ES256 without handing out the private key (see ``trust.keystore``)."""

    def sign_es256(self, message: bytes) -> bytes:
        """Return the 64-byte ``r || s`` ECDSA P-256/SHA-256 signature of ``message``."""
        ...

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half of the signing key."""
        ...


def der_to_raw_signature(der: bytes) -> bytes:
    """Convert a DER ECDSA P-256 signature (as ``cryptography`` makes) to COSE ``r || s``."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_to_der_signature(raw: bytes) -> bytes:
    """Convert a COSE ``r || s`` signature to DER. Raises :class:`BadSignature` on a bad length."""
    if len(raw) != ES256_SIGNATURE_BYTES:
        raise BadSignature(f"ES256 signature must be 64 bytes, got {len(raw)}")
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


# Looked up once: ``ec`` is a module wrapper whose attribute access costs ≈ 2 µs, and an
# ECDSA object ≈ 4 µs to build; the fleet server verifies thousands of reports a second.
_ES256 = ec.ECDSA(hashes.SHA256())
_EC_PUBLIC_KEY = ec.EllipticCurvePublicKey
_P256 = ec.SECP256R1


_EC_PUBLIC_KEY_TYPES: set[type] = set()  # concrete classes already seen to be EC public keys


def _is_p256_public_key(key: object) -> bool:
    # isinstance against cryptography's key ABC costs ≈ 2 µs a call: the concrete key
    # class is checked against it once and remembered; the curve is checked every time.
    kind = type(key)
    if kind not in _EC_PUBLIC_KEY_TYPES:
        if not isinstance(key, _EC_PUBLIC_KEY):
            return False
        _EC_PUBLIC_KEY_TYPES.add(kind)
    return isinstance(key.curve, _P256)  # type: ignore[attr-defined]


def verify_es256(public_key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> None:
    """Check a raw ES256 signature. Raises :class:`BadSignature`."""
    if not _is_p256_public_key(public_key):
        raise BadSignature("the verification key is not an ECDSA P-256 key")
    try:
        public_key.verify(raw_to_der_signature(signature), message, _ES256)
    except InvalidSignature:
        raise BadSignature("the signature does not verify with the expected key") from None


@dataclass(frozen=True)
class Sign1:
    """A decoded, *not yet verified* COSE_Sign1 message."""

    protected_bytes: bytes
    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    payload: bytes
    signature: bytes
    external_aad: bytes = field(default=b"")
    #: Whether the message carried the COSE_Sign1 tag (18). Some profiles (the PSA token,
    #: RFC 9783 §5.1.1) require it, so the decoder records it rather than dropping it.
    tagged: bool = field(default=True)

    @property
    def kid(self) -> bytes | None:
        """The key identifier (protected header first, then unprotected), if any."""
        kid = self.protected.get(HEADER_KID, self.unprotected.get(HEADER_KID))
        return kid if isinstance(kid, bytes) else None

    def to_be_signed(self, external_aad: bytes = b"") -> bytes:
        """The ``Sig_structure`` (RFC 9052 §4.4) that the signature covers."""
        return _sig_structure(self.protected_bytes, external_aad, self.payload)

    def verify(self, public_key: ec.EllipticCurvePublicKey, external_aad: bytes = b"") -> bytes:
        """Verify the signature and return the payload. Raises :class:`BadSignature`."""
        verify_es256(public_key, self.signature, self.to_be_signed(external_aad))
        return self.payload


def _sig_structure(protected_bytes: bytes, external_aad: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected_bytes, external_aad, payload])


def sign1(
    payload: bytes,
    signer: Signer,
    *,
    protected_extra: dict[Any, Any] | None = None,
    unprotected: dict[Any, Any] | None = None,
    external_aad: bytes = b"",
    tagged: bool = True,
) -> bytes:
    """Build a COSE_Sign1 message over ``payload`` signed with ES256 by ``signer``."""
    protected: dict[Any, Any] = {HEADER_ALG: ALG_ES256}
    protected.update(protected_extra or {})
    protected_bytes = cbor2.dumps(protected, canonical=True)
    signature = signer.sign_es256(_sig_structure(protected_bytes, external_aad, payload))
    if len(signature) != ES256_SIGNATURE_BYTES:
        raise ValueError("signer returned a signature that is not 64 bytes (r || s)")
    message = [protected_bytes, dict(unprotected or {}), payload, signature]
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, message) if tagged else message)


def decode_sign1(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 deterministic: bool = True) -> Sign1:
    """Parse hostile bytes as an ES256 COSE_Sign1 (tagged or untagged).

    Raises :class:`MalformedCose` for anything else: too long, not CBOR, trailing bytes,
    the wrong structure, a detached payload, or an algorithm other than ES256.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise MalformedCose("a COSE_Sign1 message must be bytes")
    if len(data) > max_bytes:
        raise MalformedCose(f"message is {len(data)} bytes, over the {max_bytes}-byte limit")
    if not data:
        raise MalformedCose("message is empty")
    data = bytes(data)
    obj = _loads_exactly(data, "message", _SIGN1_TAG, deterministic=deterministic)
    tagged = isinstance(obj, cbor2.CBORTag)
    if isinstance(obj, cbor2.CBORTag):
        if obj.tag != COSE_SIGN1_TAG:
            raise MalformedCose(f"CBOR tag {obj.tag} is not COSE_Sign1 (tag 18)")
        obj = obj.value  # cbor2 decodes a tag's content immutable: a tuple, frozendicts
    if not isinstance(obj, (list, tuple)) or len(obj) != 4:
        raise MalformedCose("COSE_Sign1 must be an array of 4 items")
    protected_bytes, unprotected, payload, signature = obj
    if not isinstance(protected_bytes, bytes):
        raise MalformedCose("protected header must be a byte string")
    if not isinstance(unprotected, (dict, cbor2.frozendict)):
        raise MalformedCose("unprotected header must be a map")
    unprotected = dict(unprotected)
    if payload is None:
        raise MalformedCose("detached payloads are not accepted")
    if not isinstance(payload, bytes):
        raise MalformedCose("payload must be a byte string")
    if not isinstance(signature, bytes):
        raise MalformedCose("signature must be a byte string")
    protected = _protected_header(protected_bytes, deterministic)
    if not isinstance(protected, dict):
        raise MalformedCose("protected header must encode a map")
    # Header labels are integers of type int (tinyward uses no text labels), and so is
    # the algorithm: -7.0 == -7 in Python, and must not pass for ES256.
    if any(type(label) is not int for label in (*protected, *unprotected)):
        raise MalformedCose("COSE header labels must be integers")
    alg = protected.get(HEADER_ALG)
    if HEADER_ALG in unprotected:
        raise MalformedCose("the algorithm must be in the protected header only")
    if type(alg) is not int or alg != ALG_ES256:
        raise MalformedCose(f"algorithm {alg!r} is not accepted (only ES256, COSE alg -7)")
    if len(signature) != ES256_SIGNATURE_BYTES:
        raise MalformedCose(f"ES256 signature must be 64 bytes, got {len(signature)}")
    return Sign1(protected_bytes, protected, unprotected, payload, signature, tagged=tagged)


#: Protected headers seen recently, by their bytes. A device signs every report with the
#: same two-entry header, so a fleet server decodes the same few bytes over and over;
#: decoding is deterministic, so the answer can be kept (bounded: cleared when full).
_PROTECTED_CACHE: dict[bytes, Any] = {}
_PROTECTED_CACHE_MAX = 4096
_PROTECTED_CACHEABLE_BYTES = 128


def _protected_header(protected_bytes: bytes, deterministic: bool) -> Any:
    if not protected_bytes:
        return {}
    # Only deterministic decodes are kept: a lenient one must not answer a strict caller.
    cached = _PROTECTED_CACHE.get(protected_bytes) if deterministic else None
    if cached is None:
        cached = _loads_exactly(protected_bytes, "protected header",
                                deterministic=deterministic)
        if (deterministic and isinstance(cached, dict)
                and len(protected_bytes) <= _PROTECTED_CACHEABLE_BYTES
                and all(type(v) in (int, bytes, str) for v in cached.values())):
            if len(_PROTECTED_CACHE) >= _PROTECTED_CACHE_MAX:
                _PROTECTED_CACHE.clear()
            _PROTECTED_CACHE[protected_bytes] = cached
    # A copy: callers own their Sign1's header and may not change the cached one.
    return dict(cached) if isinstance(cached, dict) else cached


def _malformed(error: BaseException, data: bytes, what: str) -> MalformedCose:
    """The MalformedCose (or TruncatedCose) that a decoder failure becomes."""
    if isinstance(error, cbor2.CBORDecodeEOF):
        return TruncatedCose(
            f"{what} is not valid CBOR: it ends early ({len(data)} bytes): {error}")
    return MalformedCose(f"{what} is not valid CBOR: {error}")


# Every way the decoder fails on hostile bytes. ArithmeticError, not just OverflowError: a
# bigfloat or decimal fraction (tags 4, 5) with a huge exponent or a text mantissa raises
# decimal.Overflow or InvalidOperation (found by tests/fuzz/fuzz_attestation.py).
_DECODER_FAILURES = (cbor2.CBORDecodeError, ValueError, TypeError, ArithmeticError,
                     RecursionError, MemoryError, LookupError)


class _OnlyTags(dict[int, Any]):
    """``semantic_decoders`` for cbor2 that lets through only the tags a format uses.

    cbor2 looks every tag up here *before* it decodes the tag's content (its own semantic
    decoders for tags 0-5, 24-37, 55799 … included), so a refused tag costs nothing: tag 4
    with a 60 KB bignum mantissa took 0.8 s to compute (int -> Decimal is quadratic).
    """

    def __init__(self, allowed: dict[int, Callable[[Any, bool], Any]]) -> None:
        super().__init__()
        self._allowed = allowed

    def __getitem__(self, tag: int) -> Callable[[Any, bool], Any]:
        found = self._allowed.get(tag)
        if found is None:
            raise cbor2.CBORDecodeError(f"CBOR tag {tag} is not used by this format")
        return found

    def get(self, tag: int, default: Any = None) -> Any:
        return self[tag]


_NO_TAGS = _OnlyTags({})
#: The envelope may carry the COSE_Sign1 tag (18), and nothing else.
_SIGN1_TAG = _OnlyTags({COSE_SIGN1_TAG: lambda value, _immutable: cbor2.CBORTag(
    COSE_SIGN1_TAG, value)})
def _loads_exactly(data: bytes, what: str, tags: _OnlyTags = _NO_TAGS, *,
                   deterministic: bool = True) -> Any:
    """Decode exactly one CBOR item in deterministic encoding; every failure becomes one
    :class:`MalformedCose`.

    Strict, for bytes a signer chose (an enrolled device may be hostile):

    - only the tags ``tags`` allows (none by default), refused before their content is
      decoded; no indefinite lengths (RFC 9783 forbids them in PSA tokens);
    - invalid UTF-8 is refused, and so is a map with a repeated key (RFC 8949 §5.6: two
      readers could each pick a different value; RFC 9052 §3 forbids it in COSE headers);
    - deterministic encoding: the item re-encoded by cbor2 must be exactly the input. That
      refuses every non-minimal head (RFC 8949 §4.2.1) and fixes one width for floats:
      64 bits, which is what cbor2 writes (one fixed width is as deterministic as the
      shortest one, and re-encoding without cbor2's ``canonical`` sorting costs a third:
      ≈ 3 µs against ≈ 9 µs for a 1,024-byte report's payload). Map keys stay in the
      order they came in; a schema that needs them sorted checks that itself
      (:mod:`tinyward.trust.report` does, RFC 8949 §4.2.1 order).

    ``deterministic=False`` keeps only the first two rules, for formats whose
    specification tolerates other serialisations (PSA tokens, RFC 9783 §5.1.1).

    Map labels that are not integers or text (1.0 or True equal 1 in Python) are refused
    by each schema where it looks a label up: :func:`decode_sign1` for COSE headers, the
    report and claim checks for payloads.

    ``cbor2.loads`` ignores bytes after the item. In the deterministic case that needs no
    check of its own: the re-encoding of the item must be the whole input, so trailing
    bytes fail it (named as such in the error), and ``loads`` is ≈ 2.5 µs cheaper than a
    decoder over a stream (this runs twice per report in the fleet server). Otherwise the
    decoder reads from a stream whose position tells. (cbor2 6's decoder refuses without
    keeping the refused bytes alive; the 5.x C decoder leaked them, upstream
    agronholm/cbor2#257.)
    """
    if deterministic:
        try:
            obj = cbor2.loads(data, semantic_decoders=tags, allow_indefinite=False,
                              allow_duplicate_keys=False)
        except _DECODER_FAILURES as error:
            raise _malformed(error, data, what) from None
    else:
        stream = io.BytesIO(data)
        try:
            obj = cbor2.CBORDecoder(stream, semantic_decoders=tags, allow_indefinite=False,
                                    allow_duplicate_keys=False).decode()
        except _DECODER_FAILURES as error:  # (not a context manager: this runs per report)
            raise _malformed(error, data, what) from None
        if stream.tell() != len(data):
            raise MalformedCose(
                f"{what} has {len(data) - stream.tell()} trailing bytes after the CBOR item")
        return obj
    try:
        again = cbor2.dumps(obj)
    except (cbor2.CBOREncodeError, ValueError, TypeError) as error:
        raise MalformedCose(f"{what} cannot be re-encoded: {error}") from None
    if again != data:
        if len(again) < len(data) and data.startswith(again):
            raise MalformedCose(
                f"{what} has {len(data) - len(again)} trailing bytes after the CBOR item")
        raise MalformedCose(f"{what} is not deterministically encoded CBOR (minimal heads, "
                            "64-bit floats; RFC 8949 §4.2)")
    return obj


def loads_cbor(data: bytes, what: str, *, deterministic: bool = True) -> Any:
    """Decode exactly one deterministically encoded CBOR item, without tags, from hostile
    bytes; raises :class:`MalformedCose` (see :func:`_loads_exactly` for every rule)."""
    return _loads_exactly(data, what, deterministic=deterministic)
