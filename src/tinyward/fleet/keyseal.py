"""Private keys at rest: a small versioned envelope, scrypt + AES-256-GCM.

PKCS#8's ``BestAvailableEncryption`` (the format before) derives its key with PBKDF2 at
2,048 iterations: a GPU tries billions of guesses a second. Here the key is derived with
scrypt, which is memory-hard (each guess needs ``128 * n * r`` bytes of memory), and the
plaintext PKCS#8 DER is sealed with AES-256-GCM. The envelope is JSON (one line)::

    {"format": "tinyward-sealed-key/1", "purpose": "device-ca",
     "kdf": {"name": "scrypt", "n": 131072, "r": 8, "p": 1, "salt": "<32 hex>"},
     "aead": "AES-256-GCM", "nonce": "<24 hex>", "ciphertext": "<hex>"}

Everything but the ciphertext is bound as associated data, so a file whose purpose or
parameters were edited (a CA key passed off as the update key, a cheaper ``n``) does not
open. Parameters read from a file are bounded (no 2**40 ``n`` that eats the machine).
Parameters follow OWASP's scrypt row (n=2**17, r=8, p=1: 128 MiB per guess); python-tuf's
securesystemslib uses scrypt the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tinyward.errors import Misuse
from tinyward.fleet.errors import BadFleet, WrongPassphrase

SEALED_FORMAT = "tinyward-sealed-key/1"
_MAX_FILE_BYTES = 16 * 1024
_SALT_BYTES = 16
_NONCE_BYTES = 12


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost: memory per guess is ``128 * n * r`` bytes."""

    n: int = 2**17
    r: int = 8
    p: int = 1

    @property
    def memory_bytes(self) -> int:
        return 128 * self.n * self.r


#: What new keys are sealed with (128 MiB and about 0.5 s per derivation here).
DEFAULT_SCRYPT = ScryptParams()
#: What a file may ask for when it is opened (bounded: a hostile file cannot ask 1 TiB).
MAX_SCRYPT = ScryptParams(n=2**20, r=16, p=4)


def _header(purpose: str, params: ScryptParams, salt: bytes) -> dict[str, Any]:
    return {
        "format": SEALED_FORMAT,
        "purpose": purpose,
        "kdf": {"name": "scrypt", "n": params.n, "r": params.r, "p": params.p, "salt": salt.hex()},
        "aead": "AES-256-GCM",
    }


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii")


def _derive(secret: bytes, salt: bytes, params: ScryptParams) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=params.n, r=params.r, p=params.p)
    return kdf.derive(secret)


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes) or not secret:
        raise Misuse("a key's secret must be non-empty bytes")


def seal_key(
    key: ec.EllipticCurvePrivateKey,
    secret: bytes,
    purpose: str,
    params: ScryptParams | None = None,
) -> bytes:
    """The sealed envelope of ``key`` under ``secret`` (bytes to write to a 0600 file).

    ``params`` defaults to :data:`DEFAULT_SCRYPT` as it is when called.
    """
    _check_secret(secret)
    params = params or DEFAULT_SCRYPT
    salt, nonce = os.urandom(_SALT_BYTES), os.urandom(_NONCE_BYTES)
    header = _header(purpose, params, salt)
    plain = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    sealed = AESGCM(_derive(secret, salt, params)).encrypt(nonce, plain, _aad(header))
    document = {**header, "nonce": nonce.hex(), "ciphertext": sealed.hex()}
    return (json.dumps(document) + "\n").encode("ascii")


def read_params(data: bytes) -> ScryptParams:
    """The scrypt parameters a sealed file states (for checks and ``fleet show``).

    Raises:
        BadFleet: not a sealed key, or parameters out of bounds.
    """
    header, _, _ = _parse(data, "the key file")
    kdf = header["kdf"]
    return ScryptParams(kdf["n"], kdf["r"], kdf["p"])


def _parse(data: bytes, name: str) -> tuple[dict[str, Any], bytes, bytes]:
    if data.lstrip().startswith(b"-----BEGIN"):
        raise BadFleet(
            f"{name} is an old-style PKCS#8 PEM key (PBKDF2, 2,048 iterations); "
            "migrate the fleet with `tinyward fleet migrate`"
        )
    if len(data) > _MAX_FILE_BYTES:
        raise BadFleet(f"{name} is larger than {_MAX_FILE_BYTES} bytes; not a sealed key")
    try:
        document = json.loads(data)
        kdf = document["kdf"]
        n, r, p = kdf["n"], kdf["r"], kdf["p"]
        if not all(type(v) is int and v > 0 for v in (n, r, p)):
            raise ValueError("scrypt parameters must be positive integers")
        if n & (n - 1) or n < 2:
            raise ValueError("scrypt n must be a power of two")
        if n > MAX_SCRYPT.n or r > MAX_SCRYPT.r or p > MAX_SCRYPT.p:
            raise ValueError(f"scrypt parameters above the bound {MAX_SCRYPT}")
        salt = bytes.fromhex(kdf["salt"])
        if document["format"] != SEALED_FORMAT or kdf["name"] != "scrypt":
            raise ValueError("unknown format or KDF")
        if document["aead"] != "AES-256-GCM" or not isinstance(document["purpose"], str):
            raise ValueError("unknown cipher")
        nonce = bytes.fromhex(document["nonce"])
        ciphertext = bytes.fromhex(document["ciphertext"])
        if len(salt) < _SALT_BYTES or len(nonce) != _NONCE_BYTES:
            raise ValueError("salt or nonce of the wrong length")
        header = _header(document["purpose"], ScryptParams(n, r, p), salt)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise BadFleet(f"{name} is not a sealed key or is damaged ({error})") from None
    return header, nonce, ciphertext


def open_key(
    data: bytes, secret: bytes, purpose: str, name: str = "the key file"
) -> ec.EllipticCurvePrivateKey:
    """Open a sealed key made by :func:`seal_key` for ``purpose``.

    Raises:
        WrongPassphrase: the secret does not open it (or the file was edited).
        BadFleet: not a sealed key, an old PEM key, another purpose, bounds exceeded.
        Misuse: empty secret.
    """
    _check_secret(secret)
    header, nonce, ciphertext = _parse(data, name)
    if header["purpose"] != purpose:
        raise BadFleet(f"{name} holds the {header['purpose']} key, not the {purpose} key")
    kdf = header["kdf"]
    key = _derive(secret, bytes.fromhex(kdf["salt"]), ScryptParams(kdf["n"], kdf["r"], kdf["p"]))
    try:
        plain = AESGCM(key).decrypt(nonce, ciphertext, _aad(header))
    except InvalidTag:
        raise WrongPassphrase(
            f"the secret does not open {name} (wrong passphrase, or the file was changed)"
        ) from None
    loaded = serialization.load_der_private_key(plain, password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise BadFleet(f"{name} does not hold an ECDSA private key")
    return loaded
