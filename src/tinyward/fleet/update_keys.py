"""The update repository's keys: where each lives, how it is opened, and the public index.

Offline keys (root, targets) are sealed files in the fleet's offline keys folder, each
under its own passphrase (:mod:`tinyward.fleet.keyseal`), opened only in the process
that signs and used through a :class:`~tinyward.fleet.tokens.SigningToken` (so a
hardware token can hold one); the fleet's update-signing key (``fleet init``) is the
targets key ``update-signing``. Online keys (snapshot, timestamp) are in ``server/``,
sealed under the server passphrase (or in clear, 0600, when the server key is). Signing
itself is securesystemslib's: :class:`TokenSigner` only hands it the token's
ECDSA-P256/SHA-256 DER signature (the ``ecdsa-sha2-nistp256`` scheme).

``updates/keys.json`` is public: key name -> role, key ID, file name, seal purpose.
Whether a key counts is decided by the root metadata alone, never by this index.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import Key, Signature, Signer, SSlibKey
from tuf.api.metadata import Root, Snapshot, Targets, Timestamp

from tinyward._fsutil import atomic_write
from tinyward.errors import BadInput, Misuse, StateError
from tinyward.fleet.errors import BadFleet, WeakPassphrase
from tinyward.fleet.keyseal import open_key, seal_key
from tinyward.fleet.tokens import FileSigningKey, SigningToken

OFFLINE_ROLES = (Root.type, Targets.type)
ONLINE_ROLES = (Snapshot.type, Timestamp.type)
#: The fleet's existing update-signing key (``fleet init``) is this targets key.
UPDATE_SIGNING_KEY = "update-signing"
UPDATE_SIGNING_PURPOSE = "update-signing"
MAX_KEYS_PER_ROLE = 9
_INDEX_FORMAT = "tinyward-update-keys/1"
_MAX_INDEX_BYTES = 1024 * 1024
_KEY_NAME = re.compile(r"(root|targets|snapshot|timestamp)-[1-9][0-9]{0,3}|update-signing")


class RepositoryError(BadInput):
    """The update repository refused an operation; the message says why."""


class UnknownComponent(RepositoryError):
    """The component is not one of :data:`tinyward.update.meta.COMPONENTS`."""


class NotNewer(RepositoryError):
    """The version is not newer than the one published (or pending) for the component."""


class MissingKey(RepositoryError):
    """No such key, the key is not delegated for the role, or its file is missing."""


class UnknownTarget(RepositoryError):
    """A path that is not a file of the repository (or is not there)."""


class MetadataExpired(RepositoryError):
    """Metadata the operation needs is past its expiry."""


class BadThreshold(RepositoryError):
    """A threshold or a number of keys out of range (1 to 9 keys, 1 to their number)."""


class ThresholdNotMet(RepositoryError, StateError):
    """Not enough valid signatures for the role's threshold."""


#: Test switch: True makes :func:`read_regular` open the old way (follows a symlink, blocks
#: on a FIFO, reads a device file), so the attack tests can show what the check stops.
unsafe_follow_links = False


def read_regular(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file ``path``, never following a symlink in
    its last component and never blocking on a FIFO (the repository holds only files
    tinyward wrote: a symlink there, to the server's key say, is an attack on the server).

    Raises:
        OSError: missing, not a regular file (``ELOOP`` for a symlink), unreadable.
        ValueError: larger than ``limit`` (read no further than ``limit + 1`` bytes).
    """
    if unsafe_follow_links:
        with open(path, "rb") as handle:
            data = handle.read()
    else:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{path} is not a regular file")
            with os.fdopen(fd, "rb", closefd=False) as handle:
                data = handle.read(limit + 1)
        finally:
            os.close(fd)
    if len(data) > limit:
        raise ValueError(f"over {limit} bytes")
    return data


@dataclass(frozen=True)
class Expiry:
    """How long each role's metadata stays valid after it is signed."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)

    def of(self, role: str) -> timedelta:
        period: timedelta = getattr(self, role)
        return period

    def __post_init__(self) -> None:
        for role in (*OFFLINE_ROLES, *ONLINE_ROLES):
            if self.of(role) < timedelta(minutes=1):
                raise Misuse(f"the {role} expiry must be at least a minute")


DEFAULT_EXPIRY = Expiry()


@dataclass(frozen=True)
class KeyInfo:
    """One key of the repository, as the public index records it."""

    name: str
    role: str
    keyid: str
    #: File name: in the offline keys folder (root, targets) or ``server/`` (online).
    file: str
    purpose: str

    @property
    def online(self) -> bool:
        return self.role in ONLINE_ROLES


class TokenSigner(Signer):
    """A securesystemslib signer over a :class:`SigningToken` (ECDSA P-256, SHA-256, DER
    signature: the ``ecdsa-sha2-nistp256`` scheme securesystemslib verifies)."""

    def __init__(self, token: SigningToken) -> None:
        self._token = token
        self._public = SSlibKey.from_crypto(token.public_key())

    @property
    def public_key(self) -> Key:
        return self._public

    def sign(self, payload: bytes) -> Signature:
        return Signature(self._public.keyid, self._token.sign(payload).hex())

    @classmethod
    def from_priv_key_uri(cls, priv_key_uri: str, public_key: Key,
                          secrets_handler: Any = None) -> Signer:
        raise NotImplementedError("tinyward opens its keys itself (sealed files or tokens)")


class KeyToken:
    """A :class:`SigningToken` over an already opened private key (online keys, new keys)."""

    hardware_backed = False

    def __init__(self, key: ec.EllipticCurvePrivateKey, description: str) -> None:
        self._key = key
        self.description = description

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign_certificate(self, builder: Any) -> Any:
        raise Misuse("an update repository key signs metadata, not certificates")

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def check_secrets_apart(secrets: Iterable[bytes | None]) -> None:
    seen = [s for s in secrets if s is not None]
    if len(set(seen)) != len(seen):
        raise WeakPassphrase("each update repository key needs its own passphrase; two are equal")


def check_threshold(role: str, threshold: int, count: int) -> None:
    """Refuse a role with no keys, too many, or a threshold it can never (or always) meet.

    Raises:
        BadThreshold: the message names the bound.
    """
    if not 1 <= count <= MAX_KEYS_PER_ROLE:
        raise BadThreshold(f"the {role} role needs 1 to {MAX_KEYS_PER_ROLE} keys, not {count}")
    if not 1 <= threshold <= count:
        raise BadThreshold(f"the {role} threshold must be between 1 and its {count} keys, "
                           f"not {threshold}")


class KeyRing:
    """The keys of the update repository in ``base`` (``FLEET/updates``)."""

    def __init__(self, base: Path, keys_dir: Path, server_dir: Path) -> None:
        self.base = base
        self.keys_dir = keys_dir
        self.server_dir = server_dir
        self._online: dict[str, Signer] = {}

    def new_offline_key(self, role: str, name: str, secret: bytes) -> tuple[KeyInfo, Signer]:
        """Make an offline key, seal it under ``secret`` into the keys folder; return its
        index entry and a signer for it (the private key stays in this process only)."""
        key = ec.generate_private_key(ec.SECP256R1())
        purpose, file = f"update-{role}", f"update-{name}.key"
        atomic_write(self.keys_dir / file, seal_key(key, secret, purpose))
        signer = TokenSigner(KeyToken(key, f"new {role} key {name}"))
        return KeyInfo(name, role, signer.public_key.keyid, file, purpose), signer

    def new_online_key(self, role: str, name: str,
                       server_secret: bytes | None) -> tuple[KeyInfo, Signer]:
        """Make an online key in ``server/``: sealed under ``server_secret``, or in clear
        (0600) when None, as the fleet keeps its server TLS key."""
        key = ec.generate_private_key(ec.SECP256R1())
        purpose = f"update-{role}"
        if server_secret is None:
            file = f"update-{name}.key.pem"
            atomic_write(self.server_dir / file, _pem_private(key))
        else:
            file = f"update-{name}.key"
            atomic_write(self.server_dir / file, seal_key(key, server_secret, purpose))
        signer = TokenSigner(KeyToken(key, f"online {role} key {name}"))
        return KeyInfo(name, role, signer.public_key.keyid, file, purpose), signer

    @property
    def exists(self) -> bool:
        return (self.base / "keys.json").is_file()

    def require(self) -> None:
        if not self.exists:
            raise RepositoryError(
                f"{self.base.parent} has no update repository; make one with "
                "`tinyward update init`")

    def keys(self) -> dict[str, KeyInfo]:
        """Every key the repository has made, by name (retired ones too).

        Raises:
            RepositoryError: no repository. BadFleet: the index is damaged.
        """
        self.require()
        path = self.base / "keys.json"
        try:
            document = json.loads(read_regular(path, _MAX_INDEX_BYTES))
            if document.get("format") != _INDEX_FORMAT:
                raise ValueError("unknown format")
            found = {name: KeyInfo(name, e["role"], e["keyid"], e["file"], e["purpose"])
                     for name, e in document["keys"].items()}
            for name, info in found.items():
                if (not _KEY_NAME.fullmatch(name) or "/" in info.file or info.file.startswith(".")
                        or info.role not in (*OFFLINE_ROLES, *ONLINE_ROLES)):
                    raise ValueError(f"bad entry {name!r}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise BadFleet(f"{path} is damaged ({error})") from None
        return found

    def write_index(self, index: Mapping[str, KeyInfo]) -> None:
        document = {"format": _INDEX_FORMAT, "keys": {
            name: {"role": i.role, "keyid": i.keyid, "file": i.file, "purpose": i.purpose}
            for name, i in sorted(index.items())}}
        atomic_write(self.base / "keys.json", (json.dumps(document, indent=2) + "\n").encode())

    def key(self, name: str) -> KeyInfo:
        found = self.keys().get(name)
        if found is None:
            raise MissingKey(f"the update repository has no key named {name!r} "
                             "(see `tinyward update keys list`)")
        return found

    def offline_key(self, name: str, *, need_file: bool = True) -> KeyInfo:
        """The offline key ``name``, checked before anyone is asked for its passphrase.

        Raises:
            MissingKey: no such key, an online key, or (``need_file``) its file is missing.
        """
        info = self.key(name)
        if info.online:
            raise MissingKey(f"{name} is an online key; the server signs with it")
        path = self.keys_dir / info.file
        if need_file and not path.is_file():
            raise MissingKey(f"the {name} key file {path} is missing; is the offline "
                             "keys folder elsewhere? pass it with --keys")
        return info

    def offline_signer(self, name: str, secret: bytes,
                       token: SigningToken | None = None) -> Signer:
        """A signer for the offline key ``name``, opened with its own passphrase (or
        ``token``, e.g. a hardware token holding it).

        Raises:
            MissingKey: no such key, an online key, or its file is missing.
            WrongPassphrase: ``secret`` does not open it.
        """
        info = self.offline_key(name, need_file=token is None)
        if token is None:
            token = FileSigningKey(self.keys_dir / info.file, secret, info.purpose)
        signer = TokenSigner(token)
        if signer.public_key.keyid != info.keyid:
            raise MissingKey(f"the key opened for {name} is not the one the index records")
        return signer

    def online_signer(self, role: str, root: Root, server_secret: bytes | None) -> Signer:
        """A signer for the online ``role`` key that ``root`` delegates, opened once.

        Raises:
            MissingKey: no file of a delegated key, or it is sealed and no secret given.
            WrongPassphrase: ``server_secret`` does not open it.
            BadFleet: the file holds another key than the index says.
        """
        keyids = set(root.roles[role].keyids)
        for info in self.keys().values():
            if info.role != role or info.keyid not in keyids:
                continue
            path = self.server_dir / info.file
            if not path.is_file():
                continue
            if info.keyid in self._online:
                return self._online[info.keyid]
            data = path.read_bytes()
            if info.file.endswith(".pem"):
                loaded = serialization.load_pem_private_key(data, password=None)
                if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                    raise BadFleet(f"{path} does not hold an ECDSA key")
                key = loaded
            else:
                if server_secret is None:
                    raise MissingKey(f"the online {role} key is sealed: the server passphrase "
                                     "(TINYWARD_SERVER_PASSPHRASE) is needed")
                key = open_key(data, server_secret, info.purpose, name=str(path))
            signer = TokenSigner(KeyToken(key, f"online {role} key {info.name}"))
            if signer.public_key.keyid != info.keyid:
                raise BadFleet(f"{path} does not hold the online {role} key the index records")
            # Kept open: the server re-signs on a timer, and each opening costs a scrypt
            # derivation (128 MiB). An online key is the server's to hold anyway.
            self._online[info.keyid] = signer
            return signer
        raise MissingKey(f"no file of the online {role} key the root delegates is in "
                         f"{self.server_dir}")

    def name_of(self, keyid: str) -> str:
        for info in self.keys().values():
            if info.keyid == keyid:
                return info.name
        return f"(unknown key {keyid[:12]}…)"


    @staticmethod
    def plan_names(index: Mapping[str, KeyInfo], roles: Iterable[str]) -> list[tuple[str, str]]:
        used = set(index)
        planned = []
        for role in roles:
            number = 1
            while f"{role}-{number}" in used:
                number += 1
            used.add(f"{role}-{number}")
            planned.append((f"{role}-{number}", role))
        return planned
