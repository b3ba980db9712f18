"""Device identity: the PSA Instance ID and the device ID, derived from the attestation key.

This is the one definition both sides use — the device keystore when it names itself, the
fleet when it checks an enrolment request — so that they can never disagree
(``docs/architecture.md``, "Device identity"):

- **Instance ID** (PSA UEID, RFC 9783 §4.2.1): ``0x01 || SHA-256(attestation public key
  as an uncompressed X9.62 point, 65 bytes)``, 33 bytes, as TF-M derives it from its IAK.
- **Device ID**: the 64 lowercase hex characters of that SHA-256.

Pure functions: no I/O, no randomness.
"""

from __future__ import annotations

import hashlib
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.errors import Misuse

UEID_TYPE_RAND = 0x01  # RFC 9711 §4.2.1: type byte of a random-number-based UEID
INSTANCE_ID_BYTES = 33
DEVICE_ID_PATTERN = re.compile(r"[0-9a-f]{64}")


def _attestation_key_digest(public_key: ec.EllipticCurvePublicKey) -> bytes:
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise Misuse("a device identity is derived from an ECDSA P-256 public key only")
    point = public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return hashlib.sha256(point).digest()


def instance_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The 33-byte PSA Instance ID of the device whose attestation key is ``public_key``.

    Raises:
        Misuse: ``public_key`` is not an ECDSA P-256 public key.
    """
    return bytes([UEID_TYPE_RAND]) + _attestation_key_digest(public_key)


def device_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The device ID (64 lowercase hex characters) of the device whose attestation key it is.

    Raises:
        Misuse: ``public_key`` is not an ECDSA P-256 public key.
    """
    return _attestation_key_digest(public_key).hex()


def is_device_id(text: object) -> bool:
    """True if ``text`` has the form of a device ID (64 lowercase hex characters)."""
    return isinstance(text, str) and DEVICE_ID_PATTERN.fullmatch(text) is not None


def device_id_from_instance_id(ueid: bytes) -> str:
    """Map a PSA Instance ID back to a device ID.

    Raises:
        ValueError: it is not 33 bytes starting with 0x01 (UEID type RAND).
    """
    if len(ueid) != INSTANCE_ID_BYTES or ueid[0] != UEID_TYPE_RAND:
        raise ValueError("instance ID must be 33 bytes starting with 0x01 (UEID type RAND)")
    return ueid[1:].hex()
