"""PSA attestation tokens: round trip, one named test per attack, interop, claim rules."""

from __future__ import annotations

import dataclasses
import json

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.errors import BadInput, Misuse
from tinyward.trust import attestation
from tinyward.trust.attestation import (
    PSA_PROFILE,
    PsaClaims,
    SoftwareComponent,
    TokenConfig,
    claims_to_json,
    decode_claims,
    encode_token,
    instance_id_from_public_key,
    peek_instance_id,
    verify_token,
)
from tinyward.trust.cose import sign1
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
    TruncatedToken,
    UntrustedLifecycle,
)
from tinyward.trust.psa_claims import (
    KEY_TINYWARD_OPERATING_MODE,
    KEY_TINYWARD_PROTECTIONS,
    LIFECYCLE_ASSEMBLY_AND_TEST,
    LIFECYCLE_NON_PSA_ROT_DEBUG,
)

from ..conftest import EphemeralSigner
from .psa_factory import NONCE, OTHER_NONCE, make_claims, make_token


def _claimset(token: bytes) -> dict:
    return cbor2.loads(cbor2.loads(token).value[2])


def _resign(claimset: dict, signer: EphemeralSigner, **kwargs: object) -> bytes:
    """Sign an arbitrary claim set, bypassing encode_token's checks (an attacker's token)."""
    return sign1(cbor2.dumps(claimset), signer, **kwargs)  # type: ignore[arg-type]


# --- round trip ------------------------------------------------------------------------


def test_roundtrip_returns_the_claims(signer: EphemeralSigner) -> None:
    claims = make_claims(signer)
    assert verify_token(encode_token(claims, signer), signer.public_key(), NONCE) == claims


def test_token_is_tagged_sign1_with_es256_and_spec_claim_keys(signer: EphemeralSigner) -> None:
    token = make_token(signer)
    outer = cbor2.loads(token)
    assert outer.tag == 18
    assert cbor2.loads(outer.value[0]) == {1: -7}
    claimset = _claimset(token)
    assert claimset[265] == PSA_PROFILE
    assert claimset[10] == NONCE
    assert claimset[256] == instance_id_from_public_key(signer.public_key())
    assert claimset[2399][0][2] == make_claims(signer).software_components[0].measurement_value
    assert claimset[KEY_TINYWARD_OPERATING_MODE] == "connected"


def test_instance_id_is_0x01_and_sha256_of_the_uncompressed_point(signer: EphemeralSigner) -> None:
    import hashlib

    point = signer.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert len(point) == 65
    assert (
        instance_id_from_public_key(signer.public_key()) == b"\x01" + hashlib.sha256(point).digest()
    )


def test_protections_claim_round_trips_under_a_private_key(signer: EphemeralSigner) -> None:
    claims = make_claims(signer, protections=("filesystem isolation", "landlock", "seccomp"))
    token = encode_token(claims, signer)
    assert _claimset(token)[KEY_TINYWARD_PROTECTIONS] == ["filesystem isolation", "landlock",
                                                          "seccomp"]
    assert KEY_TINYWARD_PROTECTIONS < -65536  # RFC 8392 §9.1 private use
    decoded = verify_token(token, signer.public_key(), NONCE)
    assert decoded.protections == claims.protections
    assert claims_to_json(decoded)["protections"] == list(claims.protections)


def test_optional_claims_may_be_absent(signer: EphemeralSigner) -> None:
    claims = make_claims(signer, boot_seed=None, operating_mode=None)
    token = encode_token(claims, signer)
    assert 268 not in _claimset(token) and KEY_TINYWARD_OPERATING_MODE not in _claimset(token)
    assert verify_token(token, signer.public_key(), NONCE) == claims


def test_encoding_is_deterministic_apart_from_the_signature(signer: EphemeralSigner) -> None:
    first, second = make_token(signer), make_token(signer)
    assert cbor2.loads(first).value[:3] == cbor2.loads(second).value[:3]


def test_peek_instance_id_reads_without_verifying(signer: EphemeralSigner) -> None:
    token = make_token(signer)
    assert peek_instance_id(token) == instance_id_from_public_key(signer.public_key())
    # It does not check the signature: that is verify_token's job, and the docstring says so.
    forged = _resign(_claimset(token), EphemeralSigner())
    assert peek_instance_id(forged) == instance_id_from_public_key(signer.public_key())


def test_claims_to_json_is_json_with_hex(signer: EphemeralSigner) -> None:
    claims = make_claims(signer)
    shown = claims_to_json(claims)
    json.dumps(shown)
    assert shown["nonce"] == NONCE.hex()
    assert shown["security_lifecycle_state"] == "secured"
    assert shown["software_components"][1]["measurement_type"] == "App"
    assert shown["operating_mode"] == "connected"


# --- interoperability with an implementation nobody here wrote ---------------------------


def test_pycose_verifies_a_tinyward_token(signer: EphemeralSigner) -> None:
    from pycose.keys.curves import P256
    from pycose.keys.ec2 import EC2Key
    from pycose.messages import Sign1Message

    token = make_token(signer)
    numbers = signer.public_key().public_numbers()
    # pycose 1.1's decode() wants a tag's content as a list and a dict, and cbor2 6 (which
    # both use) decodes tag contents immutable. So the tag (one byte, 0xd2 = 18) is read
    # here and pycose gets the array after it; every COSE check is still pycose's own.
    assert token[0] == 0xD2
    message = Sign1Message.from_cose_obj(cbor2.loads(token[1:]), allow_unknown_attributes=False)
    message.key = EC2Key(crv=P256, x=numbers.x.to_bytes(32, "big"), y=numbers.y.to_bytes(32, "big"))
    assert message.verify_signature()
    assert cbor2.loads(message.payload)[10] == NONCE
    # and pycose refuses it with another key, so the check above could have failed
    other = EphemeralSigner().public_key().public_numbers()
    message.key = EC2Key(crv=P256, x=other.x.to_bytes(32, "big"), y=other.y.to_bytes(32, "big"))
    assert not message.verify_signature()


def test_tinyward_verifies_a_pycose_token() -> None:
    from pycose.algorithms import Es256
    from pycose.headers import Algorithm
    from pycose.keys.curves import P256
    from pycose.keys.ec2 import EC2Key
    from pycose.messages import Sign1Message

    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.private_numbers()
    public = numbers.public_numbers
    key = EC2Key(crv=P256, x=public.x.to_bytes(32, "big"), y=public.y.to_bytes(32, "big"),
                 d=numbers.private_value.to_bytes(32, "big"))

    class PublicOnly:  # enough of a Signer for make_claims (it only reads the public key)
        def public_key(self) -> ec.EllipticCurvePublicKey:
            return private.public_key()

    claimset = _claimset(make_token(EphemeralSigner()))
    claimset[256] = instance_id_from_public_key(private.public_key())
    message = Sign1Message(phdr={Algorithm: Es256}, payload=cbor2.dumps(claimset), key=key)
    token = message.encode(tag=True)
    claims = verify_token(token, private.public_key(), NONCE)
    assert claims == make_claims(PublicOnly())  # type: ignore[arg-type]


# --- one test per attack ----------------------------------------------------------------


def test_every_flipped_byte_is_refused(signer: EphemeralSigner) -> None:
    token = make_token(signer)
    for index in range(len(token)):
        for mask in (0x01, 0x80):
            tampered = bytearray(token)
            tampered[index] ^= mask
            with pytest.raises(BadToken):
                verify_token(bytes(tampered), signer.public_key(), NONCE)


def test_every_truncation_is_refused(signer: EphemeralSigner) -> None:
    token = make_token(signer)
    for length in range(len(token)):
        with pytest.raises(MalformedToken):
            verify_token(token[:length], signer.public_key(), NONCE)
    for length in range(1, len(token)):
        with pytest.raises(TruncatedToken, match="truncated"):
            verify_token(token[:length], signer.public_key(), NONCE)


@pytest.mark.parametrize("data", [b"not cbor at all", b"\x1b\x00", b"{}"])
def test_garbage_is_not_called_truncated(signer: EphemeralSigner, data: bytes) -> None:
    # Bytes that do not start like a COSE_Sign1 are "not a token", whatever cbor2 thinks.
    with pytest.raises(MalformedToken) as caught:
        verify_token(data, signer.public_key(), NONCE)
    assert not isinstance(caught.value, TruncatedToken)
    assert "not a PSA token" in str(caught.value)


def test_trailing_bytes_are_refused(signer: EphemeralSigner) -> None:
    with pytest.raises(MalformedToken):
        verify_token(make_token(signer) + b"\x00", signer.public_key(), NONCE)


def test_wrong_nonce_is_nonce_mismatch(signer: EphemeralSigner) -> None:
    with pytest.raises(NonceMismatch):
        verify_token(make_token(signer), signer.public_key(), OTHER_NONCE)


def test_replayed_token_for_a_new_nonce_is_refused(signer: EphemeralSigner) -> None:
    old = make_token(signer)  # answered NONCE
    with pytest.raises(NonceMismatch):
        verify_token(old, signer.public_key(), OTHER_NONCE)


def test_other_key_is_bad_signature(signer: EphemeralSigner) -> None:
    with pytest.raises(BadTokenSignature):
        verify_token(make_token(signer), EphemeralSigner().public_key(), NONCE)


def test_token_signed_by_another_device_claiming_this_identity(signer: EphemeralSigner) -> None:
    # An attacker signs with their own key but copies the victim's Instance ID: the
    # verifier looks up the victim's key by that ID, and the signature fails.
    attacker = EphemeralSigner()
    claimset = _claimset(make_token(signer))
    forged = _resign(claimset, attacker)
    assert peek_instance_id(forged) == instance_id_from_public_key(signer.public_key())
    with pytest.raises(BadTokenSignature):
        verify_token(forged, signer.public_key(), NONCE)


def test_instance_id_of_another_key_is_instance_id_mismatch(signer: EphemeralSigner) -> None:
    # Signed by the right key, but naming another device: a key used for two identities.
    claimset = _claimset(make_token(signer))
    claimset[256] = instance_id_from_public_key(EphemeralSigner().public_key())
    with pytest.raises(InstanceIdMismatch):
        verify_token(_resign(claimset, signer), signer.public_key(), NONCE)


def test_untagged_sign1_is_refused(signer: EphemeralSigner) -> None:
    untagged = sign1(cbor2.dumps(_claimset(make_token(signer))), signer, tagged=False)
    with pytest.raises(MalformedToken, match="tag 18"):
        verify_token(untagged, signer.public_key(), NONCE)


def test_critical_header_is_refused(signer: EphemeralSigner) -> None:
    token = _resign(_claimset(make_token(signer)), signer, protected_extra={2: [99], 99: 1})
    with pytest.raises(MalformedToken, match="critical"):
        verify_token(token, signer.public_key(), NONCE)


def test_oversized_token_is_refused_before_parsing(signer: EphemeralSigner) -> None:
    token = make_token(signer)
    with pytest.raises(MalformedToken, match="limit"):
        verify_token(token, signer.public_key(), NONCE, config=TokenConfig(max_token_bytes=100))


@pytest.mark.parametrize("data", [b"", b"not cbor at all", b"\xff", cbor2.dumps({10: b"x"}),
                                  cbor2.dumps(cbor2.CBORTag(17, [b"", {}, b"", b""]))])
def test_non_tokens_are_malformed(signer: EphemeralSigner, data: bytes) -> None:
    with pytest.raises(MalformedToken):
        verify_token(data, signer.public_key(), NONCE)
    with pytest.raises(MalformedToken):
        peek_instance_id(data)


@pytest.mark.parametrize("state", [LIFECYCLE_ASSEMBLY_AND_TEST, 0x2000, 0x5000, 0x6000, 0x0000])
def test_untrusted_lifecycle_is_refused(signer: EphemeralSigner, state: int) -> None:
    with pytest.raises(UntrustedLifecycle):
        verify_token(make_token(signer, security_lifecycle=state), signer.public_key(), NONCE)


def test_non_psa_rot_debug_is_trusted(signer: EphemeralSigner) -> None:
    # RFC 9783 §4.3.1: SECURED and NON_PSA_ROT_DEBUG are the states a verifier may trust.
    token = make_token(signer, security_lifecycle=LIFECYCLE_NON_PSA_ROT_DEBUG + 7)
    assert verify_token(token, signer.public_key(), NONCE).security_lifecycle == 0x4007


def test_payload_that_is_not_a_map_is_malformed(signer: EphemeralSigner) -> None:
    token = sign1(cbor2.dumps([1, 2]), signer)
    with pytest.raises(MalformedToken, match="map"):
        verify_token(token, signer.public_key(), NONCE)


def test_a_claim_set_with_a_claim_twice_is_malformed(signer: EphemeralSigner) -> None:
    # Signed by the device key itself: verifiers that keep the first or the last value
    # would read different nonces. A strict decoder refuses the map (RFC 8949 §5.6).
    payload = cbor2.dumps(_claimset(make_token(signer)))
    nonce_claim = cbor2.dumps({10: NONCE})[1:]  # the key and value, without the map head
    assert payload[0] & 0xE0 == 0xA0 and (payload[0] & 0x1F) < 23
    twice = bytes([payload[0] + 1]) + payload[1:] + nonce_claim
    with pytest.raises(MalformedToken, match="not valid CBOR"):
        verify_token(sign1(twice, signer), signer.public_key(), NONCE)


def test_signature_is_checked_before_claims(signer: EphemeralSigner) -> None:
    # A forged token with bad claims says "bad signature", not which claim rule it broke.
    claimset = _claimset(make_token(signer))
    del claimset[2396]
    with pytest.raises(BadTokenSignature):
        verify_token(_resign(claimset, EphemeralSigner()), signer.public_key(), NONCE)
    with pytest.raises(MissingClaim):
        verify_token(_resign(claimset, signer), signer.public_key(), NONCE)


# --- claim rules (RFC 9783 §4) ----------------------------------------------------------


def _decode_with(signer: EphemeralSigner, key: int, value: object) -> None:
    claimset = _claimset(make_token(signer))
    if value is _DELETE:
        del claimset[key]
    else:
        claimset[key] = value
    decode_claims(cbor2.dumps(claimset))


_DELETE = object()


@pytest.mark.parametrize(
    ("key", "name"),
    [(10, "nonce"), (256, "instance_id"), (2396, "implementation_id"), (2394, "client_id"),
     (2395, "security_lifecycle"), (2399, "software_components"), (265, "profile")],
)
def test_mandatory_claims(signer: EphemeralSigner, key: int, name: str) -> None:
    with pytest.raises(MissingClaim) as caught:
        _decode_with(signer, key, _DELETE)
    assert (caught.value.claim, caught.value.key) == (name, key)


@pytest.mark.parametrize(
    ("key", "value", "name"),
    [
        (10, bytes(31), "nonce"), (10, bytes(33), "nonce"), (10, [bytes(32)], "nonce"),
        (10, "text", "nonce"),
        (256, b"\x02" + bytes(32), "instance_id"), (256, b"\x01" + bytes(31), "instance_id"),
        (2396, bytes(31), "implementation_id"), (2396, bytes(33), "implementation_id"),
        (2394, 0, "client_id"), (2394, 2**31, "client_id"), (2394, -(2**31) - 1, "client_id"),
        (2394, True, "client_id"), (2394, "1", "client_id"),
        (2395, 0x3100, "security_lifecycle"), (2395, 0x7000, "security_lifecycle"),
        (2395, -1, "security_lifecycle"), (2395, 0x10000, "security_lifecycle"),
        (268, bytes(7), "boot_seed"), (268, bytes(33), "boot_seed"), (268, 5, "boot_seed"),
        (265, "PSA_IOT_PROFILE_1", "profile"),
        (2398, "0123456789012", "certification_reference"),
        (2398, "0123456789012-1234x", "certification_reference"),
        (2400, b"https://verifier", "verification_service"),
        (2399, [], "software_components"), (2399, {}, "software_components"),
        (2399, [b"x"], "software_components"),
        (KEY_TINYWARD_OPERATING_MODE, "bluetooth", "operating_mode"),
        (KEY_TINYWARD_PROTECTIONS, "seccomp", "protections"),
        (KEY_TINYWARD_PROTECTIONS, ["seccomp", "seccomp"], "protections"),
        (KEY_TINYWARD_PROTECTIONS, ["seccomp", b"landlock"], "protections"),
        (KEY_TINYWARD_PROTECTIONS, [""], "protections"),
        (KEY_TINYWARD_PROTECTIONS, ["x" * 300], "protections"),
        (KEY_TINYWARD_PROTECTIONS, [f"p{i}" for i in range(33)], "protections"),
    ],
)
def test_bad_claim_values(signer: EphemeralSigner, key: int, value: object, name: str) -> None:
    with pytest.raises(BadClaim) as caught:
        _decode_with(signer, key, value)
    assert caught.value.claim == name


def test_a_profile_given_as_an_oid_tag_is_refused_at_the_tag(signer: EphemeralSigner) -> None:
    # EAT allows an OID (tag 111) as the profile; tinyward knows only the PSA profile URI,
    # and its decoder refuses every tag a token does not use before reading its content.
    with pytest.raises(MalformedToken, match="tag 111 is not used"):
        _decode_with(signer, 265, cbor2.CBORTag(111, b"\x01"))


@pytest.mark.parametrize(
    ("attr", "value", "field", "error"),
    [
        (2, None, "measurement_value", MissingClaim), (5, None, "signer_id", MissingClaim),
        (2, bytes(20), "measurement_value", BadClaim), (5, "id", "signer_id", BadClaim),
        (1, 7, "measurement_type", BadClaim), (4, b"1.0", "version", BadClaim),
        (6, "x" * 300, "measurement_desc", BadClaim),
    ],
)
def test_software_component_rules(
    signer: EphemeralSigner, attr: int, value: object, field: str, error: type
) -> None:
    claimset = _claimset(make_token(signer))
    if value is None:
        del claimset[2399][1][attr]
    else:
        claimset[2399][1][attr] = value
    with pytest.raises(error) as caught:
        decode_claims(claimset)
    assert (caught.value.field, caught.value.index) == (field, 1)


def test_48_and_64_byte_hashes_and_nonces_are_accepted(signer: EphemeralSigner) -> None:
    component = SoftwareComponent(bytes(48), bytes(64), "BL")
    claims = make_claims(signer, nonce=bytes(64), software_components=(component,))
    assert verify_token(encode_token(claims, signer), signer.public_key(), bytes(64)) == claims


def test_unknown_claims_are_ignored_as_eat_requires(signer: EphemeralSigner) -> None:
    claimset = _claimset(make_token(signer))
    claimset[-80000] = "something new"
    claimset["text-key"] = [1, 2]
    assert decode_claims(claimset) == make_claims(signer)


def test_claim_keys_must_be_int_or_text(signer: EphemeralSigner) -> None:
    claimset = _claimset(make_token(signer))
    claimset[b"bytes-key"] = 1
    with pytest.raises(MalformedToken):
        decode_claims(claimset)


def test_too_many_components_is_refused(signer: EphemeralSigner) -> None:
    claimset = _claimset(make_token(signer))
    with pytest.raises(BadClaim, match="limit"):
        decode_claims(claimset, config=TokenConfig(max_components=2))


# --- caller misuse ----------------------------------------------------------------------


def test_encode_refuses_invalid_claims(signer: EphemeralSigner) -> None:
    with pytest.raises(InvalidClaims, match="nonce"):
        encode_token(make_claims(signer, nonce=b"short"), signer)
    with pytest.raises(InvalidClaims, match="software_components"):
        encode_token(make_claims(signer, software_components=()), signer)
    with pytest.raises(InvalidClaims):
        encode_token(make_claims(signer, software_components=("not a component",)), signer)
    with pytest.raises(InvalidClaims):
        encode_token("claims", signer)  # type: ignore[arg-type]


def test_encode_refuses_an_instance_id_of_another_key(signer: EphemeralSigner) -> None:
    other = EphemeralSigner()
    with pytest.raises(InvalidClaims, match="Instance ID"):
        encode_token(make_claims(other), signer)


def test_encode_refuses_a_token_over_the_limit(signer: EphemeralSigner) -> None:
    with pytest.raises(InvalidClaims, match="limit"):
        encode_token(make_claims(signer), signer, config=TokenConfig(max_token_bytes=200))


def test_verify_refuses_unusable_arguments(signer: EphemeralSigner) -> None:
    token = make_token(signer)
    with pytest.raises(TokenMisuse):
        verify_token(token, signer.public_key(), b"short")
    with pytest.raises(TokenMisuse):
        verify_token(token, ec.generate_private_key(ec.SECP384R1()).public_key(), NONCE)
    with pytest.raises(TokenMisuse):
        verify_token(token, signer.public_key(), NONCE, expected_instance_id=b"\x01")


def test_error_families() -> None:
    assert issubclass(BadToken, BadInput) and issubclass(TokenMisuse, Misuse)
    assert not issubclass(BadToken, Misuse) and not issubclass(TokenMisuse, BadInput)


def test_error_names_the_claim_for_a_person() -> None:
    error = BadClaim("boot_seed", 268, "must be 8 to 32 bytes, got 33")
    assert str(error) == "claim boot_seed (268): must be 8 to 32 bytes, got 33"


def test_psa_claims_is_frozen(signer: EphemeralSigner) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_claims(signer).nonce = b""  # type: ignore[misc]
    assert isinstance(make_claims(signer), PsaClaims)
    assert TokenConfig() == attestation.DEFAULT_CONFIG


@pytest.mark.parametrize(
    ("odd_key", "value"), [(2.0, bytes(32)), (True, "PRoT"), (b"\x02", bytes(32))]
)
def test_component_attribute_keys_must_be_int_or_text(
    signer: EphemeralSigner, odd_key: object, value: object
) -> None:
    # In Python 2.0 == 2 and True == 1: without this check such keys would pass as the
    # measurement value or type.
    claimset = _claimset(make_token(signer))
    component = {5: bytes(32)} if odd_key == 2 else {2: bytes(32), 5: bytes(32)}
    component[odd_key] = value  # type: ignore[index]
    claimset[2399] = [component]
    with pytest.raises(BadClaim, match="attribute key"):
        decode_claims(cbor2.dumps(claimset))


def test_json_names_the_device(signer: EphemeralSigner) -> None:
    from tinyward.trust import identity

    shown = claims_to_json(make_claims(signer))
    assert shown["device_id"] == identity.device_id(signer.public_key())
    assert claims_to_json(make_claims(signer, instance_id=b"\x02"))["device_id"] is None


def test_instance_id_is_the_shared_identity_derivation(signer: EphemeralSigner) -> None:
    from tinyward.trust import identity

    assert instance_id_from_public_key(signer.public_key()) == identity.instance_id(
        signer.public_key()
    )


def test_hostile_keys_are_shortened_in_messages(signer: EphemeralSigner) -> None:
    claimset = _claimset(make_token(signer))
    claimset[b"x" * 5000] = 1
    with pytest.raises(MalformedToken) as caught:
        decode_claims(claimset)
    assert len(str(caught.value)) < 120


def test_variant_cbor_serialisation_is_tolerated(signer: EphemeralSigner) -> None:
    # RFC 9783 §5.1.1: attesters may skip preferred serialisation, so the verifier must
    # accept it. Here tag 18 is written in two bytes (0xd8 0x12) instead of one (0xd2).
    token = make_token(signer)
    assert token[0] == 0xD2
    variant = b"\xd8\x12" + token[1:]
    assert verify_token(variant, signer.public_key(), NONCE) == make_claims(signer)
