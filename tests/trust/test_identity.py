"""The device identity derivation, checked against values computed independently."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tinyward.errors import Misuse
from tinyward.trust.identity import device_id, instance_id, is_device_id

# The P-256 base point G (SEC 2 §2.4.2, FIPS 186-4 D.1.2.3): the public key of scalar 1.
_G_UNCOMPRESSED = bytes.fromhex(
    "04"
    "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
    "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
)


def test_instance_id_of_generator_point_matches_hand_computation() -> None:
    public_key = ec.derive_private_key(1, ec.SECP256R1()).public_key()
    expected = hashlib.sha256(_G_UNCOMPRESSED).digest()
    assert instance_id(public_key) == b"\x01" + expected
    assert len(instance_id(public_key)) == 33
    assert device_id(public_key) == expected.hex()


def test_device_id_is_instance_id_without_type_byte() -> None:
    public_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert instance_id(public_key)[1:].hex() == device_id(public_key)
    assert is_device_id(device_id(public_key))


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP384R1()).public_key(),
        ed25519.Ed25519PrivateKey.generate().public_key(),
        b"\x04" * 65,
    ],
    ids=["p384", "ed25519", "bytes"],
)
def test_identity_of_non_p256_key_is_a_caller_bug(key: object) -> None:
    with pytest.raises(Misuse):
        device_id(key)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["A" * 64, "0" * 63, "0" * 65, "g" * 64, 5, None, "0" * 64 + "\n"])
def test_is_device_id_refuses_other_forms(text: object) -> None:
    assert not is_device_id(text)
