"""The PSA claim set (RFC 9783 §4): its types, its keys, and the rules a claim set obeys.

:func:`claims_from_map` is the one place where a decoded claim map is checked, claim by
claim, and turned into :class:`PsaClaims`; :func:`claims_to_map` is its inverse. Both the
signer (:func:`tinyward.trust.attestation.encode_token`, before signing) and the verifier
use them, so tinyward never emits a claim set it would refuse. No I/O, no crypto.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tinyward.trust.errors import BadClaim, InvalidClaims, MalformedToken, MissingClaim

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
#: tinyward's private claim: names of the protections in force in the signing device's
#: process tree (sandbox layers of its application, air gap), an array of texts.
KEY_TINYWARD_PROTECTIONS = -70002
MAX_PROTECTIONS = 32

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
    protections: tuple[str, ...] | None = None


def lifecycle_state_name(value: int) -> str:
    """The PSA state name of a security lifecycle value (``"secured"`` for 0x3000..0x30ff)."""
    return _LIFECYCLE_NAMES.get(value >> 8, "invalid") if 0 <= value <= 0xFFFF else "invalid"


# --- encoding ---------------------------------------------------------------------------


def claims_to_map(claims: PsaClaims) -> dict[int, Any]:
    """The CBOR claim map of ``claims`` (optional claims left out when ``None``).

    Raises :class:`InvalidClaims` if ``software_components`` holds something else than
    :class:`SoftwareComponent`; the values themselves are checked by :func:`claims_from_map`.
    """
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
        KEY_TINYWARD_PROTECTIONS: (
            list(claims.protections) if claims.protections is not None else None
        ),
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


# --- claim rules ------------------------------------------------------------------------


def claims_from_map(claimset: Mapping[Any, Any], config: TokenConfig) -> PsaClaims:
    """Check a decoded claim map against RFC 9783 and tinyward's private claim.

    Raises :class:`MalformedToken` (a key that is neither integer nor text),
    :class:`MissingClaim` or :class:`BadClaim`.
    """
    for key in claimset:
        if not _is_int(key) and not isinstance(key, str):
            raise MalformedToken(f"claim key {_short(key)} is neither an integer nor text")
    profile = _text(claimset, KEY_PROFILE, "profile", config, required=True)
    if profile != PSA_PROFILE:
        raise BadClaim("profile", KEY_PROFILE, f"{profile!r} is not {PSA_PROFILE!r}")
    nonce = _nonce(claimset)
    instance_id = instance_id_claim(claimset)
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
    protections = _protections(claimset, config)
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
        protections=protections,
    )


def _protections(claimset: Mapping[Any, Any], config: TokenConfig) -> tuple[str, ...] | None:
    key, name = KEY_TINYWARD_PROTECTIONS, "protections"
    if key not in claimset:
        return None
    value = claimset[key]
    if type(value) is not list or len(value) > MAX_PROTECTIONS:
        raise BadClaim(name, key, f"must be an array of at most {MAX_PROTECTIONS} texts")
    for item in value:
        if type(item) is not str or not 0 < len(item.encode()) <= config.max_text_bytes:
            raise BadClaim(name, key, f"must hold texts of 1 to {config.max_text_bytes} bytes")
    if len(set(value)) != len(value):
        raise BadClaim(name, key, "names a protection twice")
    return tuple(value)


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
        raise BadClaim(
            name, key, f"text is {size} bytes, over the limit of {config.max_text_bytes}", **where
        )


def _nonce(claimset: Mapping[Any, Any]) -> bytes:
    if KEY_NONCE in claimset and isinstance(claimset[KEY_NONCE], (list, tuple)):
        raise BadClaim("nonce", KEY_NONCE, "must be a single byte string, not an array")
    nonce: bytes = _bytes(claimset, KEY_NONCE, "nonce", True)
    if len(nonce) not in NONCE_SIZES:
        raise BadClaim("nonce", KEY_NONCE, f"must be 32, 48 or 64 bytes, got {len(nonce)}")
    return nonce


def instance_id_claim(claimset: Mapping[Any, Any]) -> bytes:
    """The Instance ID claim (256) of a decoded map.

    Raises :class:`MissingClaim`, :class:`BadClaim`."""
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
            raise BadClaim(
                name,
                key,
                f"attribute key {_short(attr)} is neither an integer nor text",
                index=index,
            )

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
