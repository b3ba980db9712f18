"""Device identity derived from the attestation key (see docs/architecture.md).

The PSA Instance ID (a UEID of type RAND, RFC 9711 §4.2.1) is ``0x01`` followed by the
SHA-256 of the attestation public key as an uncompressed point, as TF-M derives it from
its Initial Attestation Key. The device ID is that hash in lowercase hex.
"""

from __future__ import annotations

import hashlib
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

UEID_TYPE_RAND = 0x01
DEVICE_ID_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def _point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def instance_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The 33-byte PSA Instance ID of a device whose attestation key is ``public_key``."""
    return bytes([UEID_TYPE_RAND]) + hashlib.sha256(_point(public_key)).digest()


def device_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The 64-hex-character device ID of a device whose attestation key is ``public_key``."""
    return hashlib.sha256(_point(public_key)).hexdigest()


def device_id_from_instance_id(ueid: bytes) -> str:
    """Map an Instance ID back to a device ID. Raises ValueError if it is not one of ours."""
    if len(ueid) != 33 or ueid[0] != UEID_TYPE_RAND:
        raise ValueError("instance ID must be 33 bytes starting with 0x01 (UEID type RAND)")
    return ueid[1:].hex()


def is_device_id(text: str) -> bool:
    """True if ``text`` has the shape of a device ID."""
    return bool(DEVICE_ID_PATTERN.match(text))
