"""Build valid PSA claims and tokens for tests (fixed values, no randomness)."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from tinyward.trust.attestation import (
    LIFECYCLE_SECURED,
    OperatingMode,
    PsaClaims,
    SoftwareComponent,
    encode_token,
    instance_id_from_public_key,
)
from tinyward.trust.cose import Signer

NONCE = hashlib.sha256(b"tinyward test nonce").digest()
OTHER_NONCE = hashlib.sha256(b"another nonce").digest()
IMPLEMENTATION_ID = hashlib.sha256(b"tinyward reference device").digest()
SIGNER_ID = hashlib.sha256(b"update-signing key").digest()


def components() -> tuple[SoftwareComponent, ...]:
    return (
        SoftwareComponent(hashlib.sha256(b"core").digest(), bytes(32), "PRoT", "0.1.0", "sha-256"),
        SoftwareComponent(hashlib.sha256(b"app").digest(), SIGNER_ID, "App", "1.2", "sha-256"),
        SoftwareComponent(hashlib.sha256(b"model").digest(), SIGNER_ID, "App_CONFIG"),
    )


def make_claims(signer: Signer, **overrides: Any) -> PsaClaims:
    claims = PsaClaims(
        nonce=NONCE,
        instance_id=instance_id_from_public_key(signer.public_key()),
        implementation_id=IMPLEMENTATION_ID,
        security_lifecycle=LIFECYCLE_SECURED,
        boot_seed=bytes(range(16)),
        client_id=-1,
        software_components=components(),
        operating_mode=OperatingMode.CONNECTED,
    )
    return dataclasses.replace(claims, **overrides)


def make_token(signer: Signer, **overrides: Any) -> bytes:
    return encode_token(make_claims(signer, **overrides), signer)
