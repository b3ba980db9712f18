"""Speeds of the fleet PKI, each next to the bare ``cryptography`` operation it wraps.

Used by ``tinyward bench fleet``. A figure is operations per second; the baseline is the
cryptographic floor of the same job done directly, so the ratio is the cost of what the
fleet adds (parsing, checks, disk, atomic writes).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tinyward.fleet.pki import Fleet
from tinyward.fleet.profiles import PURPOSES
from tinyward.trust.identity import device_id

_PASSPHRASE = b"benchmark passphrase, not a secret"
_UPDATE_PASSPHRASE = b"benchmark update passphrase, no secret either"
#: Sealed-key opens timed: each costs a scrypt derivation (128 MiB, ~0.5 s), so only a few.
_KEY_OPENS = 3


@dataclass(frozen=True)
class Figure:
    """One measured speed and its baseline, both in operations per second."""

    name: str
    per_second: float
    baseline_name: str
    baseline_per_second: float

    @property
    def ratio(self) -> float:
        """How many times slower than the baseline (1.0 = no overhead)."""
        return self.baseline_per_second / self.per_second


def _rate(operation: Callable[[int], object], count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        operation(index)
    return count / (time.perf_counter() - start)


def _request(keys: dict[str, ec.EllipticCurvePrivateKey]) -> bytes:
    name = device_id(keys["attestation"].public_key())
    blocks = []
    for purpose in PURPOSES:
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tinyward device"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, purpose),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject)
        signed = csr.sign(keys[purpose], hashes.SHA256())
        blocks.append(signed.public_bytes(serialization.Encoding.PEM))
    return b"".join(blocks)


def run(count: int = 50) -> list[Figure]:
    """Measure enrolment and certificate verification with ``count`` devices.

    Raises:
        ValueError: ``count`` is not positive.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet.init(
            Path(tmp) / "fleet", _PASSPHRASE, now=now, update_passphrase=_UPDATE_PASSPHRASE
        )
        device_ca = fleet.device_ca_token(_PASSPHRASE)  # opened once, as a batch enrolment does
        requests = [
            _request({p: ec.generate_private_key(ec.SECP256R1()) for p in PURPOSES})
            for _ in range(count)
        ]
        bundles = []
        enrol_rate = _rate(
            lambda i: bundles.append(fleet.enroll(requests[i], device_ca, now=now)), count
        )
        # Baseline: the signatures an enrolment needs — three CSR checks and three
        # certificate signatures — done bare.
        ca_key = ec.generate_private_key(ec.SECP256R1())  # signs as fast as the CA's own
        csr = x509.load_pem_x509_csr(requests[0])  # loads the first of the three

        def bare_enrol(_: int) -> None:
            for _purpose in PURPOSES:
                if not csr.is_signature_valid:
                    raise ValueError("bad CSR")
                ca_key.sign(b"tbs certificate stand-in", ec.ECDSA(hashes.SHA256()))

        bare_enrol_rate = _rate(bare_enrol, count)

        certs = [bundle.certificate("tls") for bundle in bundles]
        later = now + timedelta(minutes=1)
        verify_rate = _rate(
            lambda i: fleet.verify_device_certificate(certs[i % count], "tls", later), 10 * count
        )
        bare_verify_rate = _rate(
            lambda i: certs[i % count].verify_directly_issued_by(fleet.device_ca), 10 * count
        )
        key_rate = _rate(lambda _: fleet.update_signing_token(_UPDATE_PASSPHRASE), _KEY_OPENS)
        update_key = ec.generate_private_key(ec.SECP256R1())
        pem = update_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        clear_rate = _rate(lambda _: serialization.load_pem_private_key(pem, None), count)
    return [
        Figure("enrolments/s", enrol_rate, "3 CSR checks + 3 ECDSA signs/s", bare_enrol_rate),
        Figure(
            "certificate verifications/s",
            verify_rate,
            "bare chain signature checks/s",
            bare_verify_rate,
        ),
        Figure("sealed key opens/s (scrypt)", key_rate, "clear PEM key loads/s", clear_rate),
    ]
