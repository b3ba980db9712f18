"""`tinyward bench token`: what the PSA token codec costs on top of bare COSE_Sign1.

Each figure is printed next to its baseline, measured in the same run: encoding a token
against signing the same payload with :func:`tinyward.trust.cose.sign1`, verifying a
token against decoding and verifying the same COSE_Sign1. The difference is the claim
checks. Loops run a fixed number of times (``--count``), never "until a deadline".
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import click
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.trust.attestation import (
    LIFECYCLE_SECURED,
    PsaClaims,
    SoftwareComponent,
    decode_claims,
    encode_token,
    instance_id_from_public_key,
    verify_token,
)
from tinyward.trust.cose import decode_sign1, der_to_raw_signature, sign1


class _MemorySigner:
    """An in-memory key: this measures the codec, not the keystore (`bench trust` does)."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    def sign_es256(self, message: bytes) -> bytes:
        return der_to_raw_signature(self._key.sign(message, ec.ECDSA(hashes.SHA256())))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()


def _rate(count: int, operation: Callable[[], object]) -> float:
    operation()  # warm up
    start = time.perf_counter()
    for _ in range(count):
        operation()
    return count / (time.perf_counter() - start)


@click.command("token")
@click.option("--count", default=500, show_default=True, type=click.IntRange(10, 100_000),
              help="operations per figure")
def bench_token(count: int) -> None:
    """PSA token encode/verify per second next to bare COSE_Sign1 sign/verify."""
    signer = _MemorySigner()
    nonce = hashlib.sha256(b"bench").digest()
    components = tuple(
        SoftwareComponent(hashlib.sha256(name).digest(), bytes(32), kind, "1.0", "sha-256")
        for name, kind in ((b"core", "PRoT"), (b"app", "App"), (b"model", "App_CONFIG"))
    )
    claims = PsaClaims(nonce, instance_id_from_public_key(signer.public_key()), bytes(32),
                       LIFECYCLE_SECURED, bytes(16), -1, components, operating_mode="connected")
    token = encode_token(claims, signer)
    payload = decode_sign1(token).payload
    public = signer.public_key()
    rows = [
        ("encode (sign)", _rate(count, lambda: encode_token(claims, signer)),
         "cose.sign1", _rate(count, lambda: sign1(payload, signer))),
        ("verify", _rate(count, lambda: verify_token(token, public, nonce)),
         "cose decode+verify", _rate(count, lambda: decode_sign1(token).verify(public))),
    ]
    click.echo(f"token: {len(token)} bytes, {len(components)} components, {count} ops per figure")
    for name, rate, base_name, base in rows:
        click.echo(f"{name:14s} {rate:9.0f}/s   baseline {base_name:18s} {base:9.0f}/s"
                   f"   ratio {rate / base:.2f}")
    claim_rate = _rate(count, lambda: decode_claims(payload))
    click.echo(f"{'claim checks':14s} {claim_rate:9.0f}/s   (decode_claims alone, no crypto)")
