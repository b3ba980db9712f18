"""Certificates a device or the fleet server must refuse.

- :func:`server_credentials_other_ca`, :func:`server_credentials_wrong_key`: for a rogue
  fleet server (another CA; the right CA but a key other than the pinned one).
- :func:`client_credentials`: for a client posing as a device (self-signed or another CA).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tinyward.fleet.profiles import make_root_ca, make_server_certificate


def _write_pair(directory: Path, name: str, cert: x509.Certificate,
                key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt.pem", directory / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def server_credentials_other_ca(directory: Path, names: tuple[str, ...] = ("127.0.0.1",
                                                                          "localhost")
                                ) -> tuple[Path, Path]:
    """A valid server certificate from a CA that is not the fleet's."""
    now = datetime.now(UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_root_ca(root_key, now)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_server_certificate(key.public_key(), list(names), root, root_key, now)
    return _write_pair(directory, "server-other-ca", cert, key)


def server_credentials_wrong_key(directory: Path, fleet_dir: Path, ca_passphrase: bytes,
                                 names: tuple[str, ...] = ("127.0.0.1", "localhost")
                                 ) -> tuple[Path, Path]:
    """A server certificate the fleet's own root CA issued, for a key that is not pinned.

    Stands for a mis-issued certificate or a CA key used by an insider; chain checks alone
    accept it, only the pin refuses it.
    """
    from tinyward.fleet.pki import Fleet

    fleet = Fleet.open(fleet_dir)
    root_key = fleet.root_ca_token(ca_passphrase)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_server_certificate(key.public_key(), list(names), fleet.root_ca, root_key,
                                   datetime.now(UTC))
    return _write_pair(directory, "server-wrong-key", cert, key)


def client_credentials(directory: Path, kind: str) -> tuple[Path, Path]:
    """A TLS client certificate that the fleet must refuse: ``self-signed`` or ``other-ca``."""
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tinyward device"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "f" * 64)])
    if kind == "self-signed":
        issuer_name, issuer_key = subject, key
    elif kind == "other-ca":
        issuer_key = ec.generate_private_key(ec.SECP256R1())
        issuer_name = make_root_ca(issuer_key, now).subject
    else:
        raise ValueError(f"unknown client certificate kind {kind!r}")
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(issuer_key, hashes.SHA256()))
    return _write_pair(directory, f"client-{kind}", cert, key)
