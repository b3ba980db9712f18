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

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.trust.cose import BadSignature, MalformedCose, Signer, decode_sign1, loads_cbor, sign1
from tinyward.trust.errors import (
    BadClaim,
    BadToken,
    BadTokenSignature,
    InstanceIdMismatch,
    InvalidClaims,
    MalformedToken,
    MissingClaim,
    NonceMismatch,
    TokenMisuse,
    UntrustedLifecycle,
)
from tinyward.trust.measurement import (
    MEASUREMENT_DESC_SHA256,
    UNSIGNED_SIGNER_ID,
    measure_files,
    measure_tinyward_code,
)

__all__ = [
    "MEASUREMENT_DESC_SHA256",
    "PSA_PROFILE",
    "UNSIGNED_SIGNER_ID",
    "OperatingMode",
    "PsaClaims",
    "SoftwareComponent",
    "TokenConfig",
    "claims_to_json",
    "decode_claims",
    "device_claims",
    "device_id_from_instance_id",
    "encode_token",
    "instance_id_from_public_key",
    "lifecycle_state_name",
    "measure_files",
    "measure_tinyward_code",
    "peek_instance_id",
    "verify_token",
]

PSA_PROFILE = "tag:psacertified.org,2023:psa#tfm"

# CWT claim keys (RFC 9711 for the EAT ones, RFC 9783 §4 / IANA for the PSA ones).
KEY_NONCE = 10
KEY_INSTANCE_ID = 256  # EAT ueid
KEY_PROFILE = 265  # EAT eat_profile
KEY_BOOT_SEED = 268  # EAT bootseed
KEY_CLIENT_ID = 2394
KEY_SECURITY_LIFECYCLE = 2395
KEY_IMPLEMENTATION_ID = 2396
KEY_CERTIFICATION_REFERENCE = 2398
KEY_SOFTWARE_COMPONENTS = 2399
KEY_VERIFICATION_SERVICE = 2400
#: tinyward's private claim: the device's operating mode. RFC 8392 §9.1 reserves claim
#: keys below -65536 for private use; -70001 stays clear of the range the old PSA profile
#: (PSA_IOT_PROFILE_1) used (-75000..-75010). Verifiers that do not know it ignore it,
#: as EAT requires of unknown claims.
KEY_TINYWARD_OPERATING_MODE = -70001

# Software component attribute keys (RFC 9783 §4.4.1).
COMP_MEASUREMENT_TYPE = 1
COMP_MEASUREMENT_VALUE = 2
COMP_VERSION = 4
COMP_SIGNER_ID = 5
COMP_MEASUREMENT_DESC = 6

NONCE_SIZES = frozenset({32, 48, 64})
HASH_SIZES = frozenset({32, 48, 64})  # psa-hash-type
INSTANCE_ID_BYTES = 33
INSTANCE_ID_TYPE_RAND = 0x01
IMPLEMENTATION_ID_BYTES = 32
BOOT_SEED_MIN, BOOT_SEED_MAX = 8, 32
CLIENT_ID_MIN, CLIENT_ID_MAX = -(2**31), 2**31 - 1
_CERTIFICATION_REFERENCE = re.compile(r"[0-9]{13}-[0-9]{5}")
_COSE_HEADER_CRIT = 2

# Security lifecycle: bits 15..8 carry the PSA state, bits 7..0 an implementation-defined
# minor state (RFC 9783 §4.3.1).
LIFECYCLE_UNKNOWN = 0x0000
LIFECYCLE_ASSEMBLY_AND_TEST = 0x1000
LIFECYCLE_PSA_ROT_PROVISIONING = 0x2000
LIFECYCLE_SECURED = 0x3000
LIFECYCLE_NON_PSA_ROT_DEBUG = 0x4000
LIFECYCLE_RECOVERABLE_PSA_ROT_DEBUG = 0x5000
LIFECYCLE_DECOMMISSIONED = 0x6000
_LIFECYCLE_NAMES = {
    0x00: "unknown",
    0x10: "assembly-and-test",
    0x20: "psa-rot-provisioning",
    0x30: "secured",
    0x40: "non-psa-rot-debug",
    0x50: "recoverable-psa-rot-debug",
    0x60: "decommissioned",
}


class OperatingMode:
    """Values of tinyward's private operating-mode claim (:data:`KEY_TINYWARD_OPERATING_MODE`)."""

    CONNECTED = "connected"
    AIR_GAPPED = "air-gapped"
    ALL = frozenset({CONNECTED, AIR_GAPPED})


@dataclass(frozen=True)
class TokenConfig:
    """Limits on untrusted tokens and the verifier's lifecycle policy; defaults are safe.

    ``trusted_lifecycle_states`` holds major states (bits 15..8). RFC 9783 §4.3.1: a
    verifier can only trust a PSA RoT in the SECURED or NON_PSA_ROT_DEBUG state.
    """

    max_token_bytes: int = 8 * 1024
    max_components: int = 16
    max_text_bytes: int = 256
    trusted_lifecycle_states: frozenset[int] = frozenset(
        {LIFECYCLE_SECURED >> 8, LIFECYCLE_NON_PSA_ROT_DEBUG >> 8}
    )


DEFAULT_CONFIG = TokenConfig()


@dataclass(frozen=True)
class SoftwareComponent:
    """One entry of the Software Components claim (2399)."""

    measurement_value: bytes
    signer_id: bytes
    measurement_type: str | None = None
    version: str | None = None
    measurement_desc: str | None = None


@dataclass(frozen=True)
class PsaClaims:
    """The claims of a PSA attestation token (profile ``tag:psacertified.org,2023:psa#tfm``).

    ``operating_mode`` is tinyward's private claim (``"connected"`` or ``"air-gapped"``),
    absent in tokens made by others.
    """

    nonce: bytes
    instance_id: bytes
    implementation_id: bytes
    security_lifecycle: int
    boot_seed: bytes | None
    client_id: int
    software_components: tuple[SoftwareComponent, ...]
    profile: str = PSA_PROFILE
    verification_service: str | None = None
    certification_reference: str | None = None
    operating_mode: str | None = None


#: Implementation ID of tinyward's software root of trust (RFC 9783 §4.2.2 names the
#: build of the immutable RoT; here that is "tinyward's software core, format 1"). A port
#: to hardware with its own RoT would use the silicon vendor's ID instead.
TINYWARD_IMPLEMENTATION_ID = hashlib.sha256(b"tinyward:software-root-of-trust:1").digest()
#: Client ID for requests from outside the trusted core (negative = non-secure caller).
NON_SECURE_CLIENT_ID = -1


def device_claims(
    public_key: ec.EllipticCurvePublicKey,
    nonce: bytes,
    software_components: tuple[SoftwareComponent, ...],
    *,
    boot_seed: bytes | None = None,
    operating_mode: str | None = None,
    implementation_id: bytes = TINYWARD_IMPLEMENTATION_ID,
    security_lifecycle: int = LIFECYCLE_SECURED,
    client_id: int = NON_SECURE_CLIENT_ID,
    verification_service: str | None = None,
) -> PsaClaims:
    """The claims a tinyward device makes, with the Instance ID derived from its key.

    Checks nothing itself: :func:`encode_token` does. Raises :class:`TokenMisuse` for a
    key that is not P-256.
    """
    return PsaClaims(
        nonce=nonce,
        instance_id=instance_id_from_public_key(public_key),
        implementation_id=implementation_id,
        security_lifecycle=security_lifecycle,
        boot_seed=boot_seed,
        client_id=client_id,
        software_components=tuple(software_components),
        verification_service=verification_service,
        operating_mode=operating_mode,
    )


# --- identity ---------------------------------------------------------------------------


def instance_id_from_public_key(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The PSA Instance ID of an attestation key: ``0x01 || SHA-256(uncompressed point)``.

    This is how TF-M derives it from its IAK and how tinyward names devices (the device
    ID is the hex of the last 32 bytes). Raises :class:`TokenMisuse` for a non-P-256 key.
    """
    _check_p256(public_key)
    point = public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return bytes([INSTANCE_ID_TYPE_RAND]) + hashlib.sha256(point).digest()


def device_id_from_instance_id(instance_id: bytes) -> str:
    """The device ID (``docs/architecture.md``): the Instance ID's 32-byte hash in lowercase hex.

    Raises :class:`TokenMisuse` if ``instance_id`` is not a 33-byte RAND UEID.
    """
    if (
        not isinstance(instance_id, bytes)
        or len(instance_id) != INSTANCE_ID_BYTES
        or instance_id[0] != INSTANCE_ID_TYPE_RAND
    ):
        raise TokenMisuse("an Instance ID is 33 bytes starting with 0x01")
    return instance_id[1:].hex()


def lifecycle_state_name(value: int) -> str:
    """The PSA state name of a security lifecycle value (``"secured"`` for 0x3000..0x30ff)."""
    return _LIFECYCLE_NAMES.get(value >> 8, "invalid") if 0 <= value <= 0xFFFF else "invalid"


# --- encoding ---------------------------------------------------------------------------


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
    claimset = _to_claimset(claims)
    try:
        _claims_from_map(claimset, config)
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


def _to_claimset(claims: PsaClaims) -> dict[int, Any]:
    if not isinstance(claims.software_components, (tuple, list)) or not all(
        isinstance(c, SoftwareComponent) for c in claims.software_components
    ):
        raise InvalidClaims("software_components must be a sequence of SoftwareComponent")
    claimset: dict[int, Any] = {
        KEY_PROFILE: claims.profile,
        KEY_NONCE: claims.nonce,
        KEY_INSTANCE_ID: claims.instance_id,
        KEY_IMPLEMENTATION_ID: claims.implementation_id,
        KEY_CLIENT_ID: claims.client_id,
        KEY_SECURITY_LIFECYCLE: claims.security_lifecycle,
        KEY_SOFTWARE_COMPONENTS: [_component_to_map(c) for c in claims.software_components],
    }
    optional = {
        KEY_BOOT_SEED: claims.boot_seed,
        KEY_VERIFICATION_SERVICE: claims.verification_service,
        KEY_CERTIFICATION_REFERENCE: claims.certification_reference,
        KEY_TINYWARD_OPERATING_MODE: claims.operating_mode,
    }
    claimset.update({k: v for k, v in optional.items() if v is not None})
    return claimset


def _component_to_map(component: SoftwareComponent) -> dict[int, Any]:
    entry: dict[int, Any] = {
        COMP_MEASUREMENT_VALUE: component.measurement_value,
        COMP_SIGNER_ID: component.signer_id,
    }
    optional = {
        COMP_MEASUREMENT_TYPE: component.measurement_type,
        COMP_VERSION: component.version,
        COMP_MEASUREMENT_DESC: component.measurement_desc,
    }
    entry.update({k: v for k, v in optional.items() if v is not None})
    return entry


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
    return _claims_from_map(claimset, config)


def _load_claimset(payload: bytes, config: TokenConfig) -> Mapping[Any, Any]:
    if len(payload) > config.max_token_bytes:
        raise MalformedToken(
            f"claim set is {len(payload)} bytes, over the {config.max_token_bytes}-byte limit"
        )
    try:
        claimset = loads_cbor(payload, "claim set")
    except MalformedCose as error:
        raise MalformedToken(str(error)) from None
    if not isinstance(claimset, Mapping):
        raise MalformedToken("the claim set must be a CBOR map")
    return claimset


def _claims_from_map(claimset: Mapping[Any, Any], config: TokenConfig) -> PsaClaims:
    for key in claimset:
        if not _is_int(key) and not isinstance(key, str):
            raise MalformedToken(f"claim key {_short(key)} is neither an integer nor text")
    profile = _text(claimset, KEY_PROFILE, "profile", config, required=True)
    if profile != PSA_PROFILE:
        raise BadClaim("profile", KEY_PROFILE, f"{profile!r} is not {PSA_PROFILE!r}")
    nonce = _nonce(claimset)
    instance_id = _instance_id(claimset)
    implementation_id = _bytes(claimset, KEY_IMPLEMENTATION_ID, "implementation_id", True)
    if len(implementation_id) != IMPLEMENTATION_ID_BYTES:
        raise BadClaim(
            "implementation_id",
            KEY_IMPLEMENTATION_ID,
            f"must be {IMPLEMENTATION_ID_BYTES} bytes, got {len(implementation_id)}",
        )
    client_id = _client_id(claimset)
    lifecycle = _lifecycle(claimset)
    boot_seed = _bytes(claimset, KEY_BOOT_SEED, "boot_seed", False)
    if boot_seed is not None and not BOOT_SEED_MIN <= len(boot_seed) <= BOOT_SEED_MAX:
        raise BadClaim(
            "boot_seed",
            KEY_BOOT_SEED,
            f"must be {BOOT_SEED_MIN} to {BOOT_SEED_MAX} bytes, got {len(boot_seed)}",
        )
    certification = _text(
        claimset, KEY_CERTIFICATION_REFERENCE, "certification_reference", config, required=False
    )
    if certification is not None and not _CERTIFICATION_REFERENCE.fullmatch(certification):
        raise BadClaim(
            "certification_reference",
            KEY_CERTIFICATION_REFERENCE,
            "must be 13 digits (EAN-13), a dash and 5 digits",
        )
    service = _text(claimset, KEY_VERIFICATION_SERVICE, "verification_service", config, False)
    mode = _text(claimset, KEY_TINYWARD_OPERATING_MODE, "operating_mode", config, False)
    if mode is not None and mode not in OperatingMode.ALL:
        raise BadClaim(
            "operating_mode",
            KEY_TINYWARD_OPERATING_MODE,
            f"{mode!r} is not one of {sorted(OperatingMode.ALL)}",
        )
    return PsaClaims(
        nonce=nonce,
        instance_id=instance_id,
        implementation_id=implementation_id,
        security_lifecycle=lifecycle,
        boot_seed=boot_seed,
        client_id=client_id,
        software_components=_components(claimset, config),
        profile=profile,
        verification_service=service,
        certification_reference=certification,
        operating_mode=mode,
    )


def _is_int(value: Any) -> bool:
    # bool is an int in Python, but CBOR true/false is not an integer.
    return isinstance(value, int) and not isinstance(value, bool)


def _bytes(claimset: Mapping[Any, Any], key: int, name: str, required: bool) -> Any:
    if key not in claimset:
        if required:
            raise MissingClaim(name, key, "this claim is mandatory")
        return None
    value = claimset[key]
    if not isinstance(value, bytes):
        raise BadClaim(name, key, f"must be a byte string, got {_cbor_type(value)}")
    return value


def _text(
    claimset: Mapping[Any, Any], key: int, name: str, config: TokenConfig, required: bool
) -> Any:
    if key not in claimset:
        if required:
            raise MissingClaim(name, key, "this claim is mandatory")
        return None
    value = claimset[key]
    if not isinstance(value, str):
        raise BadClaim(name, key, f"must be a text string, got {_cbor_type(value)}")
    _check_text_size(value, config, name, key)
    return value


def _check_text_size(
    value: str, config: TokenConfig, name: str, key: int, **where: Any
) -> None:
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > config.max_text_bytes:
        raise BadClaim(name, key, f"text is {size} bytes, over the limit of {config.max_text_bytes}",
                       **where)


def _nonce(claimset: Mapping[Any, Any]) -> bytes:
    if KEY_NONCE in claimset and isinstance(claimset[KEY_NONCE], (list, tuple)):
        raise BadClaim("nonce", KEY_NONCE, "must be a single byte string, not an array")
    nonce: bytes = _bytes(claimset, KEY_NONCE, "nonce", True)
    if len(nonce) not in NONCE_SIZES:
        raise BadClaim("nonce", KEY_NONCE, f"must be 32, 48 or 64 bytes, got {len(nonce)}")
    return nonce


def _instance_id(claimset: Mapping[Any, Any]) -> bytes:
    value: bytes = _bytes(claimset, KEY_INSTANCE_ID, "instance_id", True)
    if len(value) != INSTANCE_ID_BYTES:
        raise BadClaim(
            "instance_id", KEY_INSTANCE_ID, f"must be {INSTANCE_ID_BYTES} bytes, got {len(value)}"
        )
    if value[0] != INSTANCE_ID_TYPE_RAND:
        raise BadClaim(
            "instance_id", KEY_INSTANCE_ID, f"must start with 0x01 (RAND UEID), not {value[0]:#04x}"
        )
    return value


def _client_id(claimset: Mapping[Any, Any]) -> int:
    if KEY_CLIENT_ID not in claimset:
        raise MissingClaim("client_id", KEY_CLIENT_ID, "this claim is mandatory")
    value = claimset[KEY_CLIENT_ID]
    if not _is_int(value):
        raise BadClaim("client_id", KEY_CLIENT_ID, f"must be an integer, got {_cbor_type(value)}")
    if value == 0 or not CLIENT_ID_MIN <= value <= CLIENT_ID_MAX:
        raise BadClaim("client_id", KEY_CLIENT_ID, "must be a non-zero signed 32-bit integer")
    return int(value)


def _lifecycle(claimset: Mapping[Any, Any]) -> int:
    key, name = KEY_SECURITY_LIFECYCLE, "security_lifecycle"
    if key not in claimset:
        raise MissingClaim(name, key, "this claim is mandatory")
    value = claimset[key]
    if not _is_int(value):
        raise BadClaim(name, key, f"must be an integer, got {_cbor_type(value)}")
    if not 0 <= value <= 0xFFFF or (value >> 8) not in _LIFECYCLE_NAMES:
        raise BadClaim(name, key, f"{value:#x} is not a PSA lifecycle state")
    return int(value)


def _components(claimset: Mapping[Any, Any], config: TokenConfig) -> tuple[SoftwareComponent, ...]:
    key, name = KEY_SOFTWARE_COMPONENTS, "software_components"
    if key not in claimset:
        raise MissingClaim(name, key, "this claim is mandatory")
    value = claimset[key]
    if not isinstance(value, (list, tuple)):
        raise BadClaim(name, key, f"must be an array, got {_cbor_type(value)}")
    if not value:
        raise BadClaim(name, key, "must list at least one component")
    if len(value) > config.max_components:
        raise BadClaim(name, key, f"{len(value)} components, over the limit of "
                       f"{config.max_components}")
    return tuple(_component(entry, index, config) for index, entry in enumerate(value))


def _component(entry: Any, index: int, config: TokenConfig) -> SoftwareComponent:
    key, name = KEY_SOFTWARE_COMPONENTS, "software_components"
    if not isinstance(entry, Mapping):
        raise BadClaim(name, key, f"must be a map, got {_cbor_type(entry)}", index=index)
    for attr in entry:
        # A float 2.0 or a boolean true would otherwise match the integer keys 2 and 1.
        if not _is_int(attr) and not isinstance(attr, str):
            raise BadClaim(name, key, f"attribute key {_short(attr)} is neither an integer nor text",
                           index=index)

    def hash_field(attr: int, field_name: str) -> bytes:
        if attr not in entry:
            raise MissingClaim(name, key, "this attribute is mandatory", field=field_name,
                               index=index)
        digest = entry[attr]
        if not isinstance(digest, bytes) or len(digest) not in HASH_SIZES:
            got = f"{len(digest)} bytes" if isinstance(digest, bytes) else _cbor_type(digest)
            raise BadClaim(name, key, f"must be a 32, 48 or 64-byte hash, got {got}",
                           field=field_name, index=index)
        return digest

    def text_field(attr: int, field_name: str) -> str | None:
        if attr not in entry:
            return None
        text = entry[attr]
        if not isinstance(text, str):
            raise BadClaim(name, key, f"must be text, got {_cbor_type(text)}",
                           field=field_name, index=index)
        _check_text_size(text, config, name, key, field=field_name, index=index)
        return text

    return SoftwareComponent(
        measurement_value=hash_field(COMP_MEASUREMENT_VALUE, "measurement_value"),
        signer_id=hash_field(COMP_SIGNER_ID, "signer_id"),
        measurement_type=text_field(COMP_MEASUREMENT_TYPE, "measurement_type"),
        version=text_field(COMP_VERSION, "version"),
        measurement_desc=text_field(COMP_MEASUREMENT_DESC, "measurement_desc"),
    )


def _short(value: Any) -> str:
    # Hostile values end up in messages: keep them short.
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _cbor_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    names = {bytes: "a byte string", str: "a text string", int: "an integer",
             float: "a float", list: "an array", tuple: "an array", dict: "a map"}
    return names.get(type(value), type(value).__name__)


# --- verification -----------------------------------------------------------------------


def peek_instance_id(token: bytes, *, config: TokenConfig = DEFAULT_CONFIG) -> bytes:
    """Read the Instance ID from a token WITHOUT verifying anything else. UNVERIFIED.

    Use it only to choose which key to verify with (claim-based key identification,
    RFC 9783 §5.2); never trust the answer before :func:`verify_token` succeeds with that
    key. Raises :class:`MalformedToken`, :class:`MissingClaim` or :class:`BadClaim`.
    """
    sign1_message = _decode_envelope(token, config)
    claimset = _load_claimset(sign1_message.payload, config)
    return _instance_id(claimset)


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
        message = decode_sign1(bytes(token), max_bytes=config.max_token_bytes)
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
        "device_id": device_id_from_instance_id(claims.instance_id),
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
    }

