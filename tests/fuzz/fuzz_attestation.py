"""Coverage-guided fuzzing of the PSA token decoder and verifier with atheris.

Not part of the test suite (pytest does not collect this file). Run it by hand:

    .venv/bin/pip install atheris          # not a dev dependency: wheels are per-platform
    .venv/bin/python tests/fuzz/fuzz_attestation.py --make-corpus build/fuzz-corpus
    .venv/bin/python tests/fuzz/fuzz_attestation.py build/fuzz-corpus -max_total_time=60

The first input byte chooses what the rest is: even — a whole token, fed to the
verifier as it comes from the network; odd — a claim-set payload that the harness signs
with the fixed test key first, so the fuzzer also reaches the claim rules that sit behind
the signature check. The only exceptions allowed out are BadToken subclasses; anything
else is a crash that atheris reports with the input that caused it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import cbor2
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from tinyward.trust.attestation import (
        decode_claims,
        encode_token,
        peek_instance_id,
        verify_token,
    )
    from tinyward.trust.cose import der_to_raw_signature, sign1
    from tinyward.trust.errors import BadToken

# A fixed key, so that corpus files signed in one run still verify in the next.
_KEY = ec.derive_private_key(0x7159_7A2D, ec.SECP256R1())
NONCE = bytes(range(32))


class _FixedSigner:
    def sign_es256(self, message: bytes) -> bytes:
        return der_to_raw_signature(_KEY.sign(message, ec.ECDSA(hashes.SHA256())))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return _KEY.public_key()


SIGNER = _FixedSigner()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    body = data[1:]
    token = sign1(body, SIGNER) if data[0] & 1 else body
    for call in (
        lambda: verify_token(token, SIGNER.public_key(), NONCE),
        lambda: peek_instance_id(token),
        lambda: decode_claims(body),
    ):
        try:
            call()
        except BadToken:
            pass


def make_corpus(directory: Path) -> None:
    """Seed inputs: a valid token (even byte) and its claim set (odd byte)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.trust.psa_factory import make_claims

    directory.mkdir(parents=True, exist_ok=True)
    token = encode_token(make_claims(SIGNER, nonce=NONCE), SIGNER)
    (directory / "token").write_bytes(b"\x00" + token)
    (directory / "claims").write_bytes(b"\x01" + cbor2.loads(token).value[2])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--make-corpus":
        make_corpus(Path(sys.argv[2]))
    else:
        atheris.Setup(sys.argv, test_one_input)
        atheris.Fuzz()
