"""In-memory simulated devices: real keys, real CSRs, real certificates, no keystore.

Benchmarks, tests and the demo need many devices quickly. A :class:`SimulatedDevice`
makes its three ECDSA P-256 keys in memory, builds the enrolment request exactly as
``docs/architecture.md`` specifies (three CSRs, each signed by its own key), is enrolled
by the real :class:`~tinyward.fleet.pki.Fleet`, and then signs real reports and presents
its real TLS certificate. It is *not* a secure device: its keys live in process memory;
real devices use ``tinyward.trust`` keystores.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tinyward.fleet.pki import Fleet
from tinyward.fleet.profiles import DEVICE_ORGANIZATION, PURPOSES
from tinyward.fleet.tokens import SigningToken
from tinyward.trust.cose import der_to_raw_signature
from tinyward.trust.identity import device_id as derive_device_id
from tinyward.trust.report import DEFAULT_SIZE, Report, encode_report


class KeySigner:
    """A :class:`tinyward.trust.cose.Signer` over an in-memory private key."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    def sign_es256(self, message: bytes) -> bytes:
        return der_to_raw_signature(self._key.sign(message, ec.ECDSA(hashes.SHA256())))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()


def enrolment_request(keys: dict[str, ec.EllipticCurvePrivateKey]) -> bytes:
    """The PEM enrolment request (three CSRs) for keys by purpose."""
    device_id = derive_device_id(keys["attestation"].public_key())
    blocks = []
    for purpose in PURPOSES:
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEVICE_ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, purpose),
            x509.NameAttribute(NameOID.COMMON_NAME, device_id),
        ])
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(
            keys[purpose], hashes.SHA256())
        blocks.append(csr.public_bytes(serialization.Encoding.PEM))
    return b"".join(blocks)


@dataclass
class SimulatedDevice:
    """A device enrolled in a fleet whose keys are in memory (tests and benchmarks only)."""

    device_id: str
    keys: dict[str, ec.EllipticCurvePrivateKey]
    certificates: dict[str, str] = field(default_factory=dict)
    root_ca_pem: str = ""
    next_seq: int = 1

    @classmethod
    def create(cls) -> SimulatedDevice:
        """Make keys for a new device (not enrolled yet)."""
        keys = {purpose: ec.generate_private_key(ec.SECP256R1()) for purpose in PURPOSES}
        return cls(derive_device_id(keys["attestation"].public_key()), keys)

    @classmethod
    def enrolled(cls, fleet: Fleet, ca: bytes | SigningToken,
                 report_interval: float | None = None) -> SimulatedDevice:
        """Make a device and enrol it in ``fleet`` (raises what ``Fleet.enroll`` raises).

        ``ca``: the CA passphrase, or a device CA token opened once for many devices;
        ``report_interval``: the declared schedule (default: the fleet's)."""
        device = cls.create()
        bundle = fleet.enroll(enrolment_request(device.keys), ca,
                              report_interval=report_interval)
        device.certificates = dict(bundle.certificates)
        device.root_ca_pem = bundle.root_ca_pem
        return device

    @property
    def report_signer(self) -> KeySigner:
        return KeySigner(self.keys["report"])

    def report(self, seq: int | None = None, timestamp: int = 0, size: int = DEFAULT_SIZE,
               **content: object) -> bytes:
        """A signed, padded report; ``seq`` defaults to the next number."""
        if seq is None:
            seq, self.next_seq = self.next_seq, self.next_seq + 1
        return encode_report(Report(self.device_id, seq, timestamp, **content),  # type: ignore[arg-type]
                             self.report_signer, size)

    def write_tls_files(self, folder: Path) -> tuple[Path, Path]:
        """Write the TLS certificate and (unencrypted, test-only) key; return their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        cert = folder / f"{self.device_id[:16]}.tls.cert.pem"
        key = folder / f"{self.device_id[:16]}.tls.key.pem"
        cert.write_text(self.certificates["tls"])
        key.write_bytes(self.keys["tls"].private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        key.chmod(0o600)
        return cert, key

    def client_context(self, folder: Path) -> ssl.SSLContext:
        """A TLS 1.3 client context with this device's certificate, trusting the fleet root.

        (The device link adds the server SPKI pin on top; a simulated device does not.)
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_verify_locations(cadata=self.root_ca_pem)
        context.load_cert_chain(*self.write_tls_files(folder))
        return context
