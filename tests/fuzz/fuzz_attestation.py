"""atheris harness: PSA attestation tokens — ``verify_token`` (fixed key and nonce),
``peek_instance_id`` and ``decode_claims``.

The first input byte chooses what the rest is: even — a whole token, fed to the verifier
as it would come from the network; odd — a claim-set payload that the harness signs with
the fixed key first, so that the fuzzer also reaches the claim rules behind the
signature check. ``decode_claims`` sees the rest either way.

Documented outcomes: :class:`~tinyward.trust.attestation.PsaClaims` or a
:class:`~tinyward.trust.errors.BadToken` subclass (``TokenMisuse`` is for a bad key or
nonce from the caller, and the harness's are fixed and valid, so it is a crash here).
"""

from __future__ import annotations

import contextlib
import dataclasses

from tests.fuzz.harness import SHARED, FixedSigner, instrumented, run

with instrumented(__name__):
    import cbor2

    from tinyward.trust.attestation import (
        claims_to_json,
        decode_claims,
        encode_token,
        peek_instance_id,
        verify_token,
    )
    from tinyward.trust.cose import sign1
    from tinyward.trust.errors import BadToken

SIGNER = FixedSigner(0x7159_7A2D)
PUBLIC_KEY = SIGNER.public_key()


def _nonce() -> bytes:
    from tests.trust.psa_factory import NONCE

    return NONCE


NONCE = _nonce()


def TestOneInput(data: bytes) -> None:  # the name atheris and OSS-Fuzz use
    if not data:
        return
    body = data[1:]
    token = sign1(body, SIGNER) if data[0] & 1 else body
    with contextlib.suppress(BadToken):
        claims_to_json(verify_token(token, PUBLIC_KEY, NONCE))
    with contextlib.suppress(BadToken):
        peek_instance_id(token)
    with contextlib.suppress(BadToken):
        claims_to_json(decode_claims(body))


def seeds() -> list[bytes]:
    from tests.trust.psa_factory import make_claims

    claims = [
        make_claims(SIGNER),
        make_claims(SIGNER, operating_mode="air-gapped", boot_seed=None),
        make_claims(SIGNER, nonce=bytes(64), verification_service="https://v.example",
                    certification_reference="1234567890123-12345"),
    ]
    claims.append(dataclasses.replace(claims[0], software_components=claims[0]
                                      .software_components[:1], operating_mode=None))
    out: list[bytes] = []
    for claim_set in claims:
        token = encode_token(claim_set, SIGNER)
        out.append(b"\x00" + token)
        out.append(b"\x01" + cbor2.loads(token).value[2])
    # The specification's example token: another key, so only the decoder sees it through.
    example = SHARED / "vectors" / "psa-token" / "psa-sign1.cbor"
    if example.is_file():
        out.append(b"\x00" + example.read_bytes())
    return out


if __name__ == "__main__":
    run(TestOneInput, seeds)
