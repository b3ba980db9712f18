"""Shared test fixtures."""

from __future__ import annotations

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


@pytest.fixture
def signer() -> EphemeralSigner:
    return EphemeralSigner()
