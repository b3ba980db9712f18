"""PSA attestation tokens (RFC 9783, a profile of the Entity Attestation Token, RFC 9711).

A token is a tagged COSE_Sign1 (ES256, built and parsed by :mod:`tinyward.trust.cose`)
whose payload is a CBOR map of claims. This module is a sans-IO codec: it takes and
returns ``bytes`` and never touches the disk, the network or a private key (signing goes
through a :class:`~tinyward.trust.cose.Signer`, which the keystore implements).

What a verifier checks, in this order (``verify_token``; see ``docs/attestation.md``):

1. the bytes are at most ``TokenConfig.max_token_bytes`` and form a *tagged* ES256
   COSE_Sign1 with no critical header parameters          -> :class:`MalformedToken`
2. the signature verifies with the key the caller chose   -> :class:`BadTokenSignature`
3. the payload is a claim set valid under RFC 9783         -> :class:`MissingClaim`,
   :class:`BadClaim`, :class:`MalformedToken`
4. the nonce is the one the caller sent (constant time)    -> :class:`NonceMismatch`
5. the Instance ID belongs to the verifying key            -> :class:`InstanceIdMismatch`
6. the security lifecycle is one a verifier may trust      -> :class:`UntrustedLifecycle`

The signature is checked before any claim is looked at, so an attacker without the key
learns nothing about the claim rules from the error. Claims are checked before the
nonce so that a malformed claim set never reaches a comparison.

Which key to use is the caller's business (the fleet looks it up by Instance ID):
:func:`peek_instance_id` reads the Instance ID from an *unverified* token for that
lookup only.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.trust import identity
from tinyward.trust.cose import (
    BadSignature,
    MalformedCose,
    Signer,
    TruncatedCose,
    decode_sign1,
    loads_cbor,
    sign1,
)
from tinyward.trust.errors import (
    BadToken,
    BadTokenSignature,
    InstanceIdMismatch,
    InvalidClaims,
    MalformedToken,
    NonceMismatch,
    TokenMisuse,
    TruncatedToken,
    UntrustedLifecycle,
)
from tinyward.trust.measurement import (
    MEASUREMENT_DESC_SHA256,
    UNSIGNED_SIGNER_ID,
    measure_files,
    measure_tinyward_code,
)
from tinyward.trust.psa_claims import (
    DEFAULT_CONFIG,
    LIFECYCLE_ASSEMBLY_AND_TEST,
    LIFECYCLE_DECOMMISSIONED,
    LIFECYCLE_NON_PSA_ROT_DEBUG,
    LIFECYCLE_PSA_ROT_PROVISIONING,
    LIFECYCLE_RECOVERABLE_PSA_ROT_DEBUG,
    LIFECYCLE_SECURED,
    LIFECYCLE_UNKNOWN,
    NONCE_SIZES,
    PSA_PROFILE,
    OperatingMode,
    PsaClaims,
    SoftwareComponent,
    TokenConfig,
    claims_from_map,
    claims_to_map,
    instance_id_claim,
    lifecycle_state_name,
)

__all__ = [
    "DEFAULT_CONFIG",
    "LIFECYCLE_ASSEMBLY_AND_TEST",
    "LIFECYCLE_DECOMMISSIONED",
    "LIFECYCLE_NON_PSA_ROT_DEBUG",
    "LIFECYCLE_PSA_ROT_PROVISIONING",
    "LIFECYCLE_RECOVERABLE_PSA_ROT_DEBUG",
    "LIFECYCLE_SECURED",
    "LIFECYCLE_UNKNOWN",
    "MEASUREMENT_DESC_SHA256",
    "PSA_PROFILE",
    "UNSIGNED_SIGNER_ID",
    "OperatingMode",
    "PsaClaims",
    "SoftwareComponent",
    "TokenConfig",
    "claims_to_json",
    "decode_claims",
    "encode_token",
    "instance_id_from_public_key",
    "lifecycle_state_name",
    "measure_files",
    "measure_tinyward_code",
    "peek_instance_id",
    "verify_token",
]

_COSE_HEADER_CRIT = 2


# --- identity ---------------------------------------------------------------------------


def instance_id_from_public_key(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The PSA Instance ID of an attestation key: ``0x01 || SHA-256(uncompressed point)``.

    The one derivation lives in :mod:`tinyward.trust.identity`; this is it, with the
    attestation module's error. Raises :class:`TokenMisuse` for a non-P-256 key.
    """
    _check_p256(public_key)
    return identity.instance_id(public_key)


def encode_token(
    claims: PsaClaims, signer: Signer, *, config: TokenConfig = DEFAULT_CONFIG
) -> bytes:
    """Sign ``claims`` into a PSA token (tagged COSE_Sign1, ES256, deterministic CBOR).

    The claims are run through the same checks a verifier applies, so tinyward never
    emits a token it would refuse. Raises :class:`InvalidClaims` if they fail, if the
    Instance ID is not the one derived from ``signer``'s key, or if the token would be
    over ``config.max_token_bytes``; :class:`TokenMisuse` if the signer's key is not P-256.
    """
    if not isinstance(claims, PsaClaims):
        raise InvalidClaims(f"expected PsaClaims, got {type(claims).__name__}")
    claimset = claims_to_map(claims)
    try:
        claims_from_map(claimset, config)
    except BadToken as error:
        raise InvalidClaims(f"refusing to sign invalid claims: {error}") from None
    if claims.instance_id != instance_id_from_public_key(signer.public_key()):
        raise InvalidClaims(
            "the Instance ID is not derived from the signer's key; a verifier would refuse it"
        )
    token = sign1(cbor2.dumps(claimset, canonical=True), signer)
    if len(token) > config.max_token_bytes:
        raise InvalidClaims(
            f"the token would be {len(token)} bytes, over the {config.max_token_bytes}-byte limit"
        )
    return token


# --- decoding and claim rules -----------------------------------------------------------


def decode_claims(
    payload_or_claimset: bytes | Mapping[Any, Any], *, config: TokenConfig = DEFAULT_CONFIG
) -> PsaClaims:
    """Check a claim set against RFC 9783 and return it as :class:`PsaClaims`.

    Takes either the token's payload (CBOR bytes) or an already decoded map. This checks
    claims only; it proves nothing about who made them (see :func:`verify_token`).
    Claims it does not know are ignored, as EAT requires.

    Raises :class:`MalformedToken` (not CBOR, not a map, keys that are neither integers
    nor text, over the size limit), :class:`MissingClaim` (a mandatory claim or
    component attribute is absent) or :class:`BadClaim` (wrong type, size or value).
    """
    if isinstance(payload_or_claimset, (bytes, bytearray)):
        claimset = _load_claimset(bytes(payload_or_claimset), config)
    elif isinstance(payload_or_claimset, Mapping):
        claimset = payload_or_claimset
    else:
        raise MalformedToken("a claim set must be CBOR bytes or a map")
    return claims_from_map(claimset, config)


def _load_claimset(payload: bytes, config: TokenConfig) -> Mapping[Any, Any]:
    if len(payload) > config.max_token_bytes:
        raise MalformedToken(
            f"claim set is {len(payload)} bytes, over the {config.max_token_bytes}-byte limit"
        )
    try:
        # RFC 9783 §5.1.1 tolerates serialisations other than the preferred one; tags and
        # indefinite lengths are refused all the same (cose.loads_cbor).
        claimset = loads_cbor(payload, "claim set", deterministic=False)
    except MalformedCose as error:
        raise MalformedToken(str(error)) from None
    if not isinstance(claimset, Mapping):
        raise MalformedToken("the claim set must be a CBOR map")
    return claimset


# --- verification -----------------------------------------------------------------------


def peek_instance_id(token: bytes, *, config: TokenConfig = DEFAULT_CONFIG) -> bytes:
    """Read the Instance ID from a token WITHOUT verifying anything else. UNVERIFIED.

    Use it only to choose which key to verify with (claim-based key identification,
    RFC 9783 §5.2); never trust the answer before :func:`verify_token` succeeds with that
    key. Raises :class:`MalformedToken`, :class:`MissingClaim` or :class:`BadClaim`.
    """
    sign1_message = _decode_envelope(token, config)
    claimset = _load_claimset(sign1_message.payload, config)
    return instance_id_claim(claimset)


def verify_token(
    token: bytes,
    public_key: ec.EllipticCurvePublicKey,
    expected_nonce: bytes,
    *,
    expected_instance_id: bytes | None = None,
    config: TokenConfig = DEFAULT_CONFIG,
) -> PsaClaims:
    """Verify a PSA token and return its claims (checks in the order of the module doc).

    ``expected_instance_id`` defaults to the Instance ID derived from ``public_key``
    (tinyward's and TF-M's derivation). Pass it explicitly only when an endorser handed
    you the (Instance ID, key) pair with another derivation — RFC 9783 §7 allows that,
    and the specification's example token uses a placeholder Instance ID.

    Raises :class:`MalformedToken`, :class:`BadTokenSignature`, :class:`MissingClaim`,
    :class:`BadClaim`, :class:`NonceMismatch`, :class:`InstanceIdMismatch`,
    :class:`UntrustedLifecycle` (all :class:`BadToken`) for a refused token, and
    :class:`TokenMisuse` for an unusable key, nonce or expected Instance ID.
    """
    if not isinstance(expected_nonce, bytes) or len(expected_nonce) not in NONCE_SIZES:
        raise TokenMisuse("the expected nonce must be 32, 48 or 64 bytes")
    if expected_instance_id is None:
        expected_instance_id = instance_id_from_public_key(public_key)
    else:
        _check_p256(public_key)
        if not isinstance(expected_instance_id, bytes) or len(expected_instance_id) != 33:
            raise TokenMisuse("the expected Instance ID must be 33 bytes")
    message = _decode_envelope(token, config)
    try:
        payload = message.verify(public_key)
    except BadSignature:
        raise BadTokenSignature(
            "the token's signature does not verify with this device's attestation key"
        ) from None
    claims = decode_claims(payload, config=config)
    if not hmac.compare_digest(claims.nonce, expected_nonce):
        raise NonceMismatch("the token answers another nonce (stale or replayed)")
    if not hmac.compare_digest(claims.instance_id, expected_instance_id):
        raise InstanceIdMismatch(
            "the token's Instance ID does not belong to the key that signed it"
        )
    if (claims.security_lifecycle >> 8) not in config.trusted_lifecycle_states:
        raise UntrustedLifecycle(
            f"the device is in lifecycle state {lifecycle_state_name(claims.security_lifecycle)}"
            f" ({claims.security_lifecycle:#06x}), which a verifier must not trust"
        )
    return claims


def _decode_envelope(token: bytes, config: TokenConfig) -> Any:
    if not isinstance(token, (bytes, bytearray)):
        raise MalformedToken("a token must be bytes")
    if len(token) > config.max_token_bytes:
        raise MalformedToken(
            f"token is {len(token)} bytes, over the {config.max_token_bytes}-byte limit"
        )
    try:
        message = decode_sign1(bytes(token), max_bytes=config.max_token_bytes,
                               deterministic=False)
    except TruncatedCose as error:
        # A cut-off transfer is the common case and deserves its own message; bytes that
        # do not even start like a tagged COSE_Sign1 are simply not a token.
        if bytes(token[:1]) == b"\xd2" or bytes(token[:2]) == b"\xd8\x12":
            raise TruncatedToken(
                f"the token is truncated: its {len(token)} bytes end before the COSE_Sign1 does"
            ) from None
        raise MalformedToken(f"not a PSA token (not CBOR): {error}") from None
    except MalformedCose as error:
        raise MalformedToken(f"not a PSA token: {error}") from None
    if not message.tagged:
        raise MalformedToken("a PSA token must be a tagged COSE_Sign1 (tag 18)")
    if _COSE_HEADER_CRIT in message.protected or _COSE_HEADER_CRIT in message.unprotected:
        raise MalformedToken("the token has critical header parameters tinyward does not know")
    return message


def _check_p256(public_key: Any) -> None:
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise TokenMisuse("the attestation key must be an ECDSA P-256 public key")


# --- presentation -----------------------------------------------------------------------


def claims_to_json(claims: PsaClaims) -> dict[str, Any]:
    """The claims as a JSON-ready dict (byte strings as lowercase hex), for people and logs."""
    return {
        "profile": claims.profile,
        "nonce": claims.nonce.hex(),
        "instance_id": claims.instance_id.hex(),
        "device_id": _device_id_or_none(claims.instance_id),
        "implementation_id": claims.implementation_id.hex(),
        "client_id": claims.client_id,
        "security_lifecycle": claims.security_lifecycle,
        "security_lifecycle_state": lifecycle_state_name(claims.security_lifecycle),
        "boot_seed": claims.boot_seed.hex() if claims.boot_seed is not None else None,
        "software_components": [
            {
                "measurement_type": c.measurement_type,
                "measurement_value": c.measurement_value.hex(),
                "version": c.version,
                "signer_id": c.signer_id.hex(),
                "measurement_desc": c.measurement_desc,
            }
            for c in claims.software_components
        ],
        "verification_service": claims.verification_service,
        "certification_reference": claims.certification_reference,
        "operating_mode": claims.operating_mode,
        "protections": list(claims.protections) if claims.protections is not None else None,
    }


def _device_id_or_none(instance_id: bytes) -> str | None:
    # Claims from verify_token always have a valid Instance ID; hand-built ones may not.
    try:
        return identity.device_id_from_instance_id(instance_id)
    except (ValueError, TypeError):
        return None
