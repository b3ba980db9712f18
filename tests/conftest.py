"""Shared test fixtures."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.trust.cose import der_to_raw_signature


class EphemeralSigner:
    """A Signer over an in-memory key, for tests of codecs that do not need the keystore."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    def sign_es256(self, message: bytes) -> bytes:
        return der_to_raw_signature(self._key.sign(message, ec.ECDSA(hashes.SHA256())))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()


def with_cose_part(message: bytes, index: int, value: Any) -> bytes:
    """A COSE_Sign1 message with one of its four parts replaced (the signature is kept,
    so it no longer matches: an attacker's edit), re-encoded tagged."""
    decoded = cbor2.loads(message)
    parts = list(decoded.value if isinstance(decoded, cbor2.CBORTag) else decoded)
    parts[index] = value
    return cbor2.dumps(cbor2.CBORTag(18, parts))


@pytest.fixture
def signer() -> EphemeralSigner:
    return EphemeralSigner()
