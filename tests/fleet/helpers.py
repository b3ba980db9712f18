"""Build enrolment requests the way a device does (docs/architecture.md), for tests.

The device keystore is not used here on purpose: these tests pin the fleet to the
documented format, independently of the device-side code.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tinyward.trust.identity import device_id

PURPOSES = ("tls", "report", "attestation")
PASSPHRASE = b"correct horse battery staple"  # the CA passphrase
UPDATE_PASSPHRASE = b"update key: its own, long secret"
SERVER_PASSPHRASE = b"server key: another long secret"
#: The environment the CLI reads them from (one variable per key role).
CLI_SECRETS = {
    "TINYWARD_CA_PASSPHRASE": PASSPHRASE.decode(),
    "TINYWARD_UPDATE_PASSPHRASE": UPDATE_PASSPHRASE.decode(),
    "TINYWARD_SERVER_PASSPHRASE": SERVER_PASSPHRASE.decode(),
}


def device_keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    return {purpose: ec.generate_private_key(ec.SECP256R1()) for purpose in PURPOSES}


def fixed_device_keys(seed: int) -> dict[str, ec.EllipticCurvePrivateKey]:
    """Deterministic keys (for fuzz corpora that must not change between runs)."""
    return {
        purpose: ec.derive_private_key(1000 * seed + index + 1, ec.SECP256R1())
        for index, purpose in enumerate(PURPOSES)
    }


def csr_pem(
    key: object,
    purpose: str,
    common_name: str,
    organization: str = "tinyward device",
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, purpose),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        # Deterministic ECDSA (RFC 6979) so that fixed keys give fixed bytes.
        .sign(
            key,
            algorithm or hashes.SHA256(),
            ecdsa_deterministic=isinstance(key, ec.EllipticCurvePrivateKey) or None,
        )  # type: ignore[arg-type]
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def request_pem(
    keys: dict[str, ec.EllipticCurvePrivateKey] | None = None,
    purposes: Sequence[str] = PURPOSES,
    common_name: str | None = None,
) -> bytes:
    """An enrolment request; by default a valid one for fresh keys."""
    keys = keys if keys is not None else device_keys()
    name = common_name or device_id(keys["attestation"].public_key())
    return b"".join(csr_pem(keys[p], p, name) for p in purposes)
