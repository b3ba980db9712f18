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


#: scrypt cost for the keys tests seal (2**10: 1 MiB, about a millisecond). The real cost
#: (tinyward.fleet.keyseal.DEFAULT_SCRYPT, 128 MiB) is checked by
#: tests/fleet/test_keys.py::test_attack_keys_at_rest_are_memory_hard, which restores it.
TEST_SCRYPT_N = 2**10


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sealing fleet keys costs 128 MiB and ~0.5 s each at the real cost: far too slow for
    the hundreds of fleets the tests make. A key records its parameters, so opening one
    (even in a child process) costs what it was sealed with."""
    from tinyward.fleet import keyseal

    monkeypatch.setattr(keyseal, "DEFAULT_SCRYPT", keyseal.ScryptParams(n=TEST_SCRYPT_N))
