"""Hostile bytes into the token decoder and verifier: the only way out is a documented error.

Allowed outcomes: a result, or a :class:`~tinyward.trust.errors.BadToken` subclass (which
are all :class:`tinyward.errors.BadInput`). Anything else — ``KeyError``, ``TypeError``,
``cbor2`` errors, ``RecursionError`` — is a bug. Seeds are fixed (``derandomize``).
"""

from __future__ import annotations

import contextlib
import os

import cbor2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tinyward.trust.attestation import (
    PsaClaims,
    SoftwareComponent,
    decode_claims,
    encode_token,
    instance_id_from_public_key,
    peek_instance_id,
    verify_token,
)
from tinyward.trust.errors import BadToken

from ..conftest import EphemeralSigner
from .psa_factory import NONCE, make_claims

SIGNER = EphemeralSigner()
CLAIMS = make_claims(SIGNER)
TOKEN = encode_token(CLAIMS, SIGNER)
CLAIMSET = cbor2.loads(cbor2.loads(TOKEN).value[2])
# TINYWARD_FUZZ_EXAMPLES raises the budget for a longer hunt by hand (seed stays fixed).
FUZZ = settings(
    derandomize=True, max_examples=int(os.environ.get("TINYWARD_FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _all_decoders(data: bytes) -> None:
    for call in (
        lambda: verify_token(data, SIGNER.public_key(), NONCE),
        lambda: decode_claims(data),
        lambda: peek_instance_id(data),
    ):
        with contextlib.suppress(BadToken):
            call()


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    _all_decoders(data)


@st.composite
def mutated_token(draw: st.DrawFn) -> bytes:
    data = bytearray(TOKEN)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=9))
        elif kind == "delete" and data:
            del data[position : position + draw(st.integers(1, 9))]
        elif kind == "truncate":
            del data[position:]
    return bytes(data)


@FUZZ
@given(mutated_token())
def test_mutated_tokens_never_change_claims_and_never_crash(data: bytes) -> None:
    assume(data != TOKEN)
    try:
        claims = verify_token(data, SIGNER.public_key(), NONCE)
    except BadToken:
        pass
    else:
        # Only a different encoding of the same signed content may still verify (CBOR
        # allows variant serialisations of the outer structure); its claims cannot change.
        assert claims == CLAIMS
    _all_decoders(data)


# Arbitrary CBOR values, including the awkward ones cbor2 produces (tags, floats, bools).
cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.binary(max_size=70) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.integers(-3, 3) | st.text(max_size=3), children, max_size=4)
    | st.builds(cbor2.CBORTag, st.integers(6, 30), children),
    max_leaves=12,
)
claim_keys = st.sampled_from([10, 256, 265, 268, 2394, 2395, 2396, 2398, 2399, 2400, -70001])


@FUZZ
@given(st.dictionaries(claim_keys, cbor_values, max_size=6), st.booleans())
def test_claim_sets_with_replaced_values(replacements: dict, drop_instead: bool) -> None:
    claimset = dict(CLAIMSET)
    for key, value in replacements.items():
        if drop_instead:
            claimset.pop(key, None)
        else:
            claimset[key] = value
    for data in (claimset, cbor2.dumps(claimset)):
        with contextlib.suppress(BadToken):
            decode_claims(data)


@FUZZ
@given(st.integers(0, 3), st.dictionaries(st.integers(0, 8), cbor_values, max_size=5))
def test_software_components_with_replaced_attributes(index: int, attrs: dict) -> None:
    claimset = dict(CLAIMSET)
    components = [dict(c) for c in claimset[2399]]
    if index < len(components):
        components[index].update(attrs)
    else:
        components.append(attrs)
    claimset[2399] = components
    with contextlib.suppress(BadToken):
        decode_claims(cbor2.dumps(claimset))


hashes = st.sampled_from([32, 48, 64]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
short_text = st.text(max_size=20) | st.none()
components = st.builds(SoftwareComponent, hashes, hashes, short_text, short_text, short_text)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    nonce=hashes,
    implementation_id=st.binary(min_size=32, max_size=32),
    lifecycle=st.sampled_from([0x3000, 0x4000]).flatmap(lambda m: st.integers(m, m + 0xFF)),
    boot_seed=st.none() | st.binary(min_size=8, max_size=32),
    client_id=st.integers(-(2**31), 2**31 - 1).filter(bool),
    software=st.lists(components, min_size=1, max_size=5).map(tuple),
    mode=st.sampled_from([None, "connected", "air-gapped"]),
    protections=st.none() | st.lists(st.text(min_size=1, max_size=40), max_size=32,
                                     unique=True).map(tuple),
)
def test_every_valid_claim_set_round_trips(
    nonce: bytes, implementation_id: bytes, lifecycle: int, boot_seed: bytes | None,
    client_id: int, software: tuple[SoftwareComponent, ...], mode: str | None,
    protections: tuple[str, ...] | None,
) -> None:
    claims = PsaClaims(
        nonce=nonce, instance_id=instance_id_from_public_key(SIGNER.public_key()),
        implementation_id=implementation_id, security_lifecycle=lifecycle, boot_seed=boot_seed,
        client_id=client_id, software_components=software, operating_mode=mode,
        protections=protections,
    )
    assert verify_token(encode_token(claims, SIGNER), SIGNER.public_key(), nonce) == claims
