"""The device keystore: keys made inside, used by handle, never exported.

This follows the PSA Crypto model. A key is created *in* the keystore with a fixed usage
policy (:class:`KeyUsage`) and afterwards referred to only by its :class:`KeyHandle`. The
keystore signs with it when the requested usage matches the policy, and raises
:class:`~tinyward.trust.errors.PolicyViolation` otherwise. There is no method that returns
private key bytes.

Private keys are sealed at rest in :class:`~tinyward.trust.storage.ProtectedStorage`
(AES-256-GCM under a key derived from the root of trust). Python's ``ssl`` module can only
load a TLS client key from a file, so a TLS key also gets an *encrypted* PKCS#8 PEM file
whose passphrase is derived from the root of trust inside the keystore and handed straight
to ``SSLContext.load_cert_chain``; it is never returned or written anywhere.
"""

from __future__ import annotations

import enum
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tinyward.trust.cose import der_to_raw_signature
from tinyward.trust.errors import (
    KeyExists,
    KeystoreError,
    PolicyViolation,
    SealBroken,
    UnknownKey,
)
from tinyward.trust.rot import RootOfTrust
from tinyward.trust.storage import ProtectedStorage

_SEAL_MAGIC = b"TWSEAL1"
_KEY_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


class KeyUsage(enum.Enum):
    """What a key may be used for. Fixed when the key is made; one usage per key."""

    SIGN_REPORT = "sign-report"
    SIGN_ATTESTATION = "sign-attestation"
    TLS_CLIENT = "tls-client"


@dataclass(frozen=True)
class KeyHandle:
    """An opaque reference to a key inside the keystore (name and usage policy)."""

    name: str
    usage: KeyUsage


class KeystoreSigner:
    """A :class:`~tinyward.trust.cose.Signer` bound to one key and one usage."""

    def __init__(self, keystore: Keystore, handle: KeyHandle, usage: KeyUsage) -> None:
        self._keystore = keystore
        self._handle = handle
        self._usage = usage

    @property
    def handle(self) -> KeyHandle:
        return self._handle

    def sign_es256(self, message: bytes) -> bytes:
        return self._keystore.sign(self._handle, self._usage, message)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._keystore.public_key(self._handle)


class Keystore:
    """Keys by handle over protected storage. See the module docstring."""

    def __init__(self, storage: ProtectedStorage, root: RootOfTrust, key_file_dir: Path) -> None:
        self._storage = storage
        self._root = root
        # The one file the keystore needs outside protected storage (see _write_tls_key_file).
        from tinyward.trust._files import FileFolder  # the disk adapter

        self._key_files = FileFolder(Path(key_file_dir), ".key.pem", create=False)
        # Loaded keys stay in this (trusted) process's memory so signing does not re-read disk.
        self._loaded: dict[str, tuple[KeyUsage, ec.EllipticCurvePrivateKey]] = {}
        self._seal_aead: AESGCM | None = None

    @staticmethod
    def _record(name: str) -> str:
        return f"key.{name}"

    def generate(self, name: str, usage: KeyUsage, *, now: float) -> KeyHandle:
        """Create a new ECDSA P-256 key named ``name`` with a fixed ``usage``, made at ``now``
        (Unix seconds, kept with the key).

        Raises :class:`KeyExists` if the name is taken (keys are never replaced).
        """
        if not _KEY_NAME.match(name):
            raise ValueError(f"key name {name!r} must be 1-32 characters of a-z, 0-9 and '-'")
        private_key = ec.generate_private_key(ec.SECP256R1())
        der = private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        record = {"usage": usage.value, "curve": "P-256", "pkcs8": der, "created": int(now)}
        # Check and write under one lock: two processes must not both find the name free.
        with self._storage.transaction():
            if self._storage.exists(self._record(name)):
                raise KeyExists(f"a key named {name!r} already exists in this keystore")
            self._storage.write(self._record(name), cbor2.dumps(record))
            if usage is KeyUsage.TLS_CLIENT:
                self._write_tls_key_file(name, private_key)
        self._loaded[name] = (usage, private_key)
        return KeyHandle(name, usage)

    def handle(self, name: str) -> KeyHandle:
        """Look up an existing key. Raises :class:`UnknownKey`."""
        usage, _ = self._load(name)
        return KeyHandle(name, usage)

    def names(self) -> list[str]:
        """The names of the keys in this keystore."""
        return [name[len("key."):] for name in self._storage.names("key.")]

    def _load(self, name: str) -> tuple[KeyUsage, ec.EllipticCurvePrivateKey]:
        cached = self._loaded.get(name)
        if cached is not None:
            return cached
        if not self._storage.exists(self._record(name)):
            raise UnknownKey(f"no key named {name!r} in this keystore")
        record = cbor2.loads(self._storage.read(self._record(name)))
        try:
            usage = KeyUsage(record["usage"])
        except (KeyError, ValueError, TypeError):
            raise KeystoreError(f"key {name!r} has no valid usage policy") from None
        try:
            key = serialization.load_der_private_key(record["pkcs8"], password=None)
        except (KeyError, ValueError, TypeError):
            raise KeystoreError(f"key {name!r} holds no readable private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeystoreError(f"key {name!r} is not an EC key")
        self._loaded[name] = (usage, key)
        return usage, key

    def _checked(self, handle: KeyHandle, usage: KeyUsage) -> ec.EllipticCurvePrivateKey:
        stored_usage, key = self._load(handle.name)
        if stored_usage is not usage or handle.usage is not usage:
            raise PolicyViolation(
                f"key {handle.name!r} may only be used to {stored_usage.value}, "
                f"not to {usage.value}"
            )
        return key

    def public_key(self, handle: KeyHandle) -> ec.EllipticCurvePublicKey:
        """The public half of a key (public keys are not secret)."""
        return self._load(handle.name)[1].public_key()

    def sign(self, handle: KeyHandle, usage: KeyUsage, message: bytes) -> bytes:
        """ES256-sign ``message`` (64-byte ``r || s``) if ``usage`` matches the key's policy."""
        key = self._checked(handle, usage)
        return der_to_raw_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))

    def signer(self, handle: KeyHandle, usage: KeyUsage) -> KeystoreSigner:
        """A Signer for COSE code; the usage is checked on every signature."""
        self._checked(handle, usage)
        return KeystoreSigner(self, handle, usage)

    def certificate_request(
        self, handle: KeyHandle, subject: x509.Name
    ) -> x509.CertificateSigningRequest:
        """A CSR signed by the key itself: proof of possession for enrolment.

        Allowed for every key: the signature covers a structured request naming this key's
        public half, not caller-chosen bytes.
        """
        _, key = self._load(handle.name)
        return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(
            key, hashes.SHA256()
        )

    # Sealing: data bound to this device (and to a label) without a named record.

    def _sealer(self) -> AESGCM:
        if self._seal_aead is None:
            self._seal_aead = AESGCM(self._root.derive_key("keystore/seal/aes-256-gcm"))
        return self._seal_aead

    def seal(self, plaintext: bytes, label: str) -> bytes:
        """Encrypt and authenticate ``plaintext`` under a device-bound key; ``label`` is bound in.

        The result can be stored anywhere; only this device can :meth:`unseal` it, and only
        under the same label.
        """
        nonce = os.urandom(12)
        return _SEAL_MAGIC + nonce + self._sealer().encrypt(nonce, plaintext, label.encode())

    def unseal(self, blob: bytes, label: str) -> bytes:
        """Reverse :meth:`seal`. Raises :class:`SealBroken` if the blob was altered,
        truncated, sealed under another label, or sealed by another device."""
        if len(blob) < len(_SEAL_MAGIC) + 12 + 16 or not blob.startswith(_SEAL_MAGIC):
            raise SealBroken("sealed blob is truncated or not a tinyward sealed blob")
        nonce = blob[len(_SEAL_MAGIC):len(_SEAL_MAGIC) + 12]
        try:
            return self._sealer().decrypt(nonce, blob[len(_SEAL_MAGIC) + 12:], label.encode())
        except InvalidTag:
            raise SealBroken(
                "sealed blob failed authentication: altered, sealed under another label, "
                "or by another device"
            ) from None

    # TLS client keys: an encrypted PEM for Python's ssl, passphrase derived here.

    def _tls_passphrase(self, name: str) -> bytes:
        return self._root.derive_key(f"tls-key-file/{name}").hex().encode()

    def _write_tls_key_file(self, name: str, key: ec.EllipticCurvePrivateKey) -> None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._tls_passphrase(name)),
        )
        self._key_files.write(name, pem)

    def load_tls_client_credentials(
        self, context: ssl.SSLContext, handle: KeyHandle, certificate_path: Path
    ) -> None:
        """Load the TLS client certificate and key into ``context`` without exposing the key."""
        self._checked(handle, KeyUsage.TLS_CLIENT)
        try:
            context.load_cert_chain(
                str(certificate_path),
                str(self._key_files.path(handle.name)),
                password=lambda: self._tls_passphrase(handle.name),
            )
        except (ssl.SSLError, OSError) as error:
            raise KeystoreError(
                f"could not load TLS client credentials for key {handle.name!r}: {error}"
            ) from None
