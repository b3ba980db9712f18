"""Where the fleet's signing keys live: an interface a hardware token can implement.

The root CA, the device CA and the update-signing key sign rarely (enrolment, rotation,
releases) and must never be in the internet-facing server. :class:`SigningToken` is all
the fleet asks of them, as :class:`tinyward.trust.rot.RootOfTrust` is all the device asks
of its root of trust: a PKCS#11 HSM or a smartcard can implement it without the private
key ever leaving the token.

:class:`FileSigningKey` is the default and **a software stand-in**: a sealed key file
(:mod:`tinyward.fleet.keyseal`, scrypt + AES-256-GCM) opened with its own passphrase in the
process that signs, and nowhere else. Keep the files offline (``fleet init`` writes them
to ``FLEET/keys/``; move that folder to removable media and pass ``--keys``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.fleet.errors import BadFleet
from tinyward.fleet.keyseal import open_key

_MAX_KEY_FILE = 16 * 1024


class SigningToken(Protocol):
    """A signing key the fleet can use but need not hold (ECDSA P-256, SHA-256)."""

    #: A short description, e.g. "sealed key file keys/device-ca.key (software stand-in)".
    description: str
    #: True only when software cannot read the private key out.
    hardware_backed: bool

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The token's public key."""
        ...

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        """Sign ``builder`` (ECDSA-SHA256) and return the certificate."""
        ...

    def sign(self, message: bytes) -> bytes:
        """An ECDSA-SHA256 signature of ``message`` (DER)."""
        ...


class FileSigningKey:
    """A :class:`SigningToken` over a sealed key file (see the module docstring)."""

    hardware_backed = False

    def __init__(self, path: Path, secret: bytes, purpose: str) -> None:
        """Open the sealed key at ``path`` for ``purpose`` with ``secret``.

        Raises:
            WrongPassphrase: the secret does not open it.
            BadFleet: missing, damaged, old PEM format, or another purpose's key.
        """
        self.path = Path(path)
        self.description = f"sealed key file {self.path} (software stand-in for a token)"
        try:
            with self.path.open("rb") as handle:
                data = handle.read(_MAX_KEY_FILE + 1)
        except OSError:
            raise BadFleet(
                f"{self.path} is missing; the {purpose} key is offline? pass its folder with --keys"
            ) from None
        self._key = open_key(data, secret, purpose, name=str(self.path))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self._key, hashes.SHA256())

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))
