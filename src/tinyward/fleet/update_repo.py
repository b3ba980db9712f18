"""The fleet's update repository: The Update Framework (TUF), through python-tuf.

Metadata is python-tuf's (:mod:`tuf.api.metadata`), signatures securesystemslib's; this
module only decides where keys live, who signs what and when, and writes files in an
order that never exposes a half-published state. Devices read it with a stock
``tuf.ngclient.Updater`` (``tests/fleet/test_update_interop.py`` proves it over HTTPS).

On disk, inside the fleet folder::

    updates/repo/metadata/N.root.json       the root chain (1, 2, ...; never rewritten)
    updates/repo/metadata/N.targets.json    consistent snapshots: one file per version
    updates/repo/metadata/N.snapshot.json
    updates/repo/metadata/timestamp.json    the one file a client asks for unversioned
    updates/repo/targets/<sha256>.<name>    target files, hash-prefixed
    updates/keys.json                       public index: key name -> role, key ID, file
    updates/pending/{root,targets}.json     metadata collecting threshold signatures
    keys/update-root-<n>.key, keys/update-targets-<n>.key   offline keys (one passphrase each)
    keys/update-signing.key                 the fleet's update key: targets key "update-signing"
    server/update-timestamp-<n>.key, ...snapshot-<n>.key    online keys (server passphrase)

Roles: root and targets are offline, each key sealed with its own passphrase
(:mod:`tinyward.fleet.keyseal`) and used through a :class:`~tinyward.fleet.tokens.SigningToken`
(a hardware token can stand in); thresholds are configurable (default root 2 of 3,
targets 1 of 1). Snapshot and timestamp are online: the running server calls
:meth:`UpdateRepository.refresh_online` to re-sign them before they expire and to take
up a newly signed targets version.

Commit points. A client starts at ``timestamp.json``, so a publish writes everything
else first (target files, ``N.targets.json``, ``N.snapshot.json``) under new names and
``timestamp.json`` last, atomically: a publish that fails half-way leaves the previous
state served and verifiable. A new root is its own commit point (a client fetches
``N+1.root.json`` directly), so it is written only once signed by the thresholds of both
the old and the new root (TUF's rule for root rotation).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import Key, Signature, Signer, SSlibKey
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from tinyward._fsutil import PRIVATE_DIR_MODE, atomic_write
from tinyward.errors import BadInput, Misuse, StateError
from tinyward.fleet.errors import BadFleet, WeakPassphrase
from tinyward.fleet.keyseal import open_key, seal_key
from tinyward.fleet.passphrase import check_new_passphrase
from tinyward.fleet.tokens import FileSigningKey, SigningToken
from tinyward.update.errors import BadTargetMeta
from tinyward.update.meta import COMPONENTS, TargetMeta, Version

__all__ = [
    "DEFAULT_EXPIRY",
    "ONLINE_ROLES",
    "OFFLINE_ROLES",
    "Expiry",
    "KeyInfo",
    "MetadataExpired",
    "MissingKey",
    "NotNewer",
    "RepositoryError",
    "RootChange",
    "SignOutcome",
    "ThresholdNotMet",
    "UnknownComponent",
    "UpdateRepository",
    "UPDATE_SIGNING_KEY",
]

OFFLINE_ROLES = (Root.type, Targets.type)
ONLINE_ROLES = (Snapshot.type, Timestamp.type)
#: The fleet's existing update-signing key (``fleet init``) is this targets key.
UPDATE_SIGNING_KEY = "update-signing"
_UPDATE_SIGNING_PURPOSE = "update-signing"
_INDEX_FORMAT = "tinyward-update-keys/1"
_MAX_KEYS_PER_ROLE = 9
_MAX_TARGET_BYTES = 512 * 1024 * 1024
_MAX_METADATA_BYTES = 4 * 1024 * 1024
_KEY_NAME = re.compile(r"^(root|targets|snapshot|timestamp)-[1-9][0-9]{0,3}$|^update-signing$")
_VERSIONED = re.compile(r"^([1-9][0-9]{0,8})\.(root|targets|snapshot)\.json$")


class RepositoryError(BadInput):
    """The update repository refused an operation; the message says why."""


class UnknownComponent(RepositoryError):
    """The component is not one of :data:`tinyward.update.meta.COMPONENTS`."""


class NotNewer(RepositoryError):
    """The version is not newer than the one published (or pending) for the component."""


class MissingKey(RepositoryError):
    """No such key, the key is not delegated for the role, or its file is missing."""


class MetadataExpired(RepositoryError):
    """Metadata the operation needs is past its expiry."""


class ThresholdNotMet(RepositoryError, StateError):
    """Not enough valid signatures for the role's threshold."""


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


@dataclass(frozen=True)
class RootChange:
    """What a root rotation changes. Unnamed fields stay as they are.

    ``replace``: key names to retire, each replaced by a fresh key of the same role (an
    offline one needs a new passphrase in ``new_secrets`` under the new key's name; an
    online one is sealed with the server passphrase). ``add``: roles that gain a new key.
    ``remove``: key names to retire without replacement."""

    replace: tuple[str, ...] = ()
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    root_threshold: int | None = None
    targets_threshold: int | None = None


@dataclass(frozen=True)
class SignOutcome:
    """Where a threshold-signed role stands after a signature."""

    role: str
    version: int
    signed_by: tuple[str, ...]
    #: Signatures still needed (for root: under the old and the new root, the larger).
    missing: int
    committed: bool
    online_refreshed: tuple[str, ...] = ()


@dataclass
class _State:
    """The repository as a client sees it, read and verified from disk."""

    root: Metadata[Root]
    root_bytes: bytes
    targets: Metadata[Targets] | None
    snapshot: Metadata[Snapshot] | None
    timestamp: Metadata[Timestamp] | None
    extra: dict[str, Any] = field(default_factory=dict)


class _TokenSigner(Signer):
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
                          secrets_handler: Any = None) -> Signer:  # noqa: ANN401
        raise NotImplementedError("tinyward opens its keys itself (sealed files or tokens)")


class _KeyToken:
    """A :class:`SigningToken` over an already opened private key (online keys, new keys)."""

    hardware_backed = False

    def __init__(self, key: ec.EllipticCurvePrivateKey, description: str) -> None:
        self._key = key
        self.description = description

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign_certificate(self, builder: Any) -> Any:  # noqa: ANN401
        raise Misuse("an update repository key signs metadata, not certificates")

    def sign(self, message: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes

        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))


def _utc(now: datetime | None) -> datetime:
    if now is None:
        now = datetime.now(UTC)
    if now.tzinfo is None:
        raise Misuse("times must be timezone-aware (UTC)")
    # TUF writes whole seconds; keep ours whole so that what we sign is what we read back.
    return now.astimezone(UTC).replace(microsecond=0)


def _bytes(md: Metadata[Any]) -> bytes:
    return md.to_bytes(JSONSerializer(compact=False))


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _check_secrets_apart(secrets: Iterable[bytes | None]) -> None:
    seen = [s for s in secrets if s is not None]
    if len(set(seen)) != len(seen):
        raise WeakPassphrase("each update repository key needs its own passphrase; two are equal")


def _check_threshold(role: str, threshold: int, count: int) -> None:
    if not 1 <= count <= _MAX_KEYS_PER_ROLE:
        raise Misuse(f"the {role} role needs 1 to {_MAX_KEYS_PER_ROLE} keys, not {count}")
    if not 1 <= threshold <= count:
        raise Misuse(f"the {role} threshold must be between 1 and its {count} keys, "
                     f"not {threshold}")


def target_name(meta: TargetMeta) -> str:
    """The TUF target path of a component release (flat: ``<class>.<component>-<version>``)."""
    return f"{meta.product_class}.{meta.component}-{meta.version}"


class UpdateRepository:
    """The update repository of the fleet in ``fleet_dir`` (see the module docstring)."""

    def __init__(self, fleet_dir: Path, *, keys_dir: Path | None = None,
                 expiry: Expiry = DEFAULT_EXPIRY) -> None:
        self.fleet_dir = Path(fleet_dir)
        self.base = self.fleet_dir / "updates"
        self.metadata_dir = self.base / "repo" / "metadata"
        self.targets_dir = self.base / "repo" / "targets"
        self.pending_dir = self.base / "pending"
        self.keys_dir = Path(keys_dir) if keys_dir is not None else self.fleet_dir / "keys"
        self.server_dir = self.fleet_dir / "server"
        self.expiry = expiry

    # -- creation --------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        fleet_dir: Path,
        *,
        root_secrets: Sequence[bytes],
        targets_secrets: Sequence[bytes] = (),
        update_signing: SigningToken | None = None,
        server_secret: bytes | None,
        root_threshold: int = 2,
        targets_threshold: int = 1,
        keys_dir: Path | None = None,
        expiry: Expiry = DEFAULT_EXPIRY,
        now: datetime | None = None,
    ) -> UpdateRepository:
        """Make the repository: one root key per ``root_secrets`` entry (each sealed with
        it), the fleet's update-signing key (``update_signing``, if given) plus one new
        targets key per ``targets_secrets`` entry, and one online snapshot and one online
        timestamp key under ``server_secret`` (None: kept in clear, 0600, like a clear
        server TLS key). Version 1 of every role is signed by all keys and published.

        Raises:
            WeakPassphrase: a new passphrase breaks the fleet's rule, or two are equal.
            Misuse: thresholds or key counts out of range.
            RepositoryError: the fleet already has an update repository.
            BadFleet: ``fleet_dir`` is not a fleet.
        """
        now = _utc(now)
        repo = cls(fleet_dir, keys_dir=keys_dir, expiry=expiry)
        if not (repo.fleet_dir / "fleet.json").is_file():
            raise BadFleet(f"{repo.fleet_dir} is not a tinyward fleet (no fleet.json)")
        if (repo.base / "keys.json").exists() or repo.metadata_dir.exists():
            raise RepositoryError(f"{repo.base} already holds an update repository")
        targets_count = len(targets_secrets) + (1 if update_signing is not None else 0)
        _check_threshold("root", root_threshold, len(root_secrets))
        _check_threshold("targets", targets_threshold, targets_count)
        for index, secret in enumerate(root_secrets, 1):
            check_new_passphrase(secret.decode("utf-8", "replace"), f"update root-{index}")
        for index, secret in enumerate(targets_secrets, 2 if update_signing else 1):
            check_new_passphrase(secret.decode("utf-8", "replace"), f"update targets-{index}")
        _check_secrets_apart([*root_secrets, *targets_secrets, server_secret])

        for folder in (repo.metadata_dir, repo.targets_dir, repo.pending_dir, repo.keys_dir,
                       repo.server_dir):
            folder.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        index: dict[str, KeyInfo] = {}
        signers: dict[str, list[Signer]] = {r: [] for r in (*OFFLINE_ROLES, *ONLINE_ROLES)}
        for position, secret in enumerate(root_secrets, 1):
            info, signer = repo._new_offline_key("root", f"root-{position}", secret)
            index[info.name] = info
            signers["root"].append(signer)
        if update_signing is not None:
            signer = _TokenSigner(update_signing)
            index[UPDATE_SIGNING_KEY] = KeyInfo(UPDATE_SIGNING_KEY, "targets",
                                                signer.public_key.keyid,
                                                f"{_UPDATE_SIGNING_PURPOSE}.key",
                                                _UPDATE_SIGNING_PURPOSE)
            signers["targets"].append(signer)
        for position, secret in enumerate(targets_secrets, 2 if update_signing else 1):
            info, signer = repo._new_offline_key("targets", f"targets-{position}", secret)
            index[info.name] = info
            signers["targets"].append(signer)
        for role in ONLINE_ROLES:
            info, signer = repo._new_online_key(role, f"{role}-1", server_secret)
            index[info.name] = info
            signers[role].append(signer)
        repo._write_index(index)

        root = Root(version=1, expires=now + expiry.root, consistent_snapshot=True)
        for role, role_signers in signers.items():
            for signer in role_signers:
                root.add_key(signer.public_key, role)
        root.roles["root"].threshold = root_threshold
        root.roles["targets"].threshold = targets_threshold
        root_md = Metadata(root)
        for signer in signers["root"]:
            root_md.sign(signer, append=True)
        targets_md = Metadata(Targets(version=1, expires=now + expiry.targets))
        for signer in signers["targets"]:
            targets_md.sign(signer, append=True)
        # Timestamp last: until it exists, a client sees no repository at all.
        atomic_write(repo.metadata_dir / "1.root.json", _bytes(root_md), 0o644)
        atomic_write(repo.metadata_dir / "1.targets.json", _bytes(targets_md), 0o644)
        repo.refresh_online(now, server_secret)
        return repo

    def _new_offline_key(self, role: str, name: str, secret: bytes) -> tuple[KeyInfo, Signer]:
        key = ec.generate_private_key(ec.SECP256R1())
        purpose, file = f"update-{role}", f"update-{name}.key"
        atomic_write(self.keys_dir / file, seal_key(key, secret, purpose))
        signer = _TokenSigner(_KeyToken(key, f"new {role} key {name}"))
        return KeyInfo(name, role, signer.public_key.keyid, file, purpose), signer

    def _new_online_key(self, role: str, name: str,
                        server_secret: bytes | None) -> tuple[KeyInfo, Signer]:
        key = ec.generate_private_key(ec.SECP256R1())
        purpose = f"update-{role}"
        if server_secret is None:
            file = f"update-{name}.key.pem"
            atomic_write(self.server_dir / file, _pem_private(key))
        else:
            file = f"update-{name}.key"
            atomic_write(self.server_dir / file, seal_key(key, server_secret, purpose))
        signer = _TokenSigner(_KeyToken(key, f"online {role} key {name}"))
        return KeyInfo(name, role, signer.public_key.keyid, file, purpose), signer

    # -- the key index ---------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return (self.base / "keys.json").is_file()

    def _require(self) -> None:
        if not self.exists:
            raise RepositoryError(
                f"{self.fleet_dir} has no update repository; make one with "
                "`tinyward update init`")

    def keys(self) -> dict[str, KeyInfo]:
        """Every key the repository has made, by name (retired ones too).

        Raises:
            RepositoryError: no repository. BadFleet: the index is damaged.
        """
        self._require()
        path = self.base / "keys.json"
        try:
            document = json.loads(path.read_bytes())
            if document.get("format") != _INDEX_FORMAT:
                raise ValueError("unknown format")
            found = {name: KeyInfo(name, e["role"], e["keyid"], e["file"], e["purpose"])
                     for name, e in document["keys"].items()}
            for name, info in found.items():
                if (not _KEY_NAME.match(name) or "/" in info.file or info.file.startswith(".")
                        or info.role not in (*OFFLINE_ROLES, *ONLINE_ROLES)):
                    raise ValueError(f"bad entry {name!r}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise BadFleet(f"{path} is damaged ({error})") from None
        return found

    def _write_index(self, index: Mapping[str, KeyInfo]) -> None:
        document = {"format": _INDEX_FORMAT, "keys": {
            name: {"role": i.role, "keyid": i.keyid, "file": i.file, "purpose": i.purpose}
            for name, i in sorted(index.items())}}
        atomic_write(self.base / "keys.json", (json.dumps(document, indent=2) + "\n").encode())

    def _key(self, name: str) -> KeyInfo:
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
        info = self._key(name)
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
        signer = _TokenSigner(token)
        if signer.public_key.keyid != info.keyid:
            raise MissingKey(f"the key opened for {name} is not the one the index records")
        return signer

    def _online_signer(self, role: str, root: Root, server_secret: bytes | None) -> Signer:
        keyids = set(root.roles[role].keyids)
        for info in self.keys().values():
            if info.role != role or info.keyid not in keyids:
                continue
            path = self.server_dir / info.file
            if not path.is_file():
                continue
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
            return _TokenSigner(_KeyToken(key, f"online {role} key {info.name}"))
        raise MissingKey(f"no file of the online {role} key the root delegates is in "
                         f"{self.server_dir}")

    # -- reading the published state ---------------------------------------------------------

    def _read(self, name: str) -> Metadata[Any]:
        path = self.metadata_dir / name
        try:
            data = path.read_bytes()
            if len(data) > _MAX_METADATA_BYTES:
                raise ValueError("too large")
            return Metadata.from_bytes(data)
        except (OSError, ValueError, DeserializationError) as error:
            raise BadFleet(f"{path} is missing or damaged ({error})") from None

    def _versions(self, role: str) -> list[int]:
        found = []
        if self.metadata_dir.is_dir():
            for entry in self.metadata_dir.iterdir():
                match = _VERSIONED.match(entry.name)
                if match and match.group(2) == role:
                    found.append(int(match.group(1)))
        return sorted(found)

    def _trusted_root(self) -> tuple[Metadata[Root], bytes]:
        """Walk the root chain from 1.root.json as a client does; return the newest link."""
        self._require()
        current: Metadata[Root] = self._read("1.root.json")
        try:
            current.signed.verify_delegate(Root.type, current.signed_bytes, current.signatures)
        except UnsignedMetadataError as error:
            raise BadFleet(f"1.root.json is not signed by its own threshold ({error})") from None
        data = (self.metadata_dir / "1.root.json").read_bytes()
        version = 2
        while (self.metadata_dir / f"{version}.root.json").is_file():
            candidate: Metadata[Root] = self._read(f"{version}.root.json")
            try:
                if candidate.signed.type != Root.type or candidate.signed.version != version:
                    raise UnsignedMetadataError("wrong type or version")
                current.signed.verify_delegate(Root.type, candidate.signed_bytes,
                                               candidate.signatures)
                candidate.signed.verify_delegate(Root.type, candidate.signed_bytes,
                                                 candidate.signatures)
            except UnsignedMetadataError as error:
                raise BadFleet(f"{version}.root.json does not continue the root chain "
                               f"({error}); the repository is damaged") from None
            current = candidate
            data = (self.metadata_dir / f"{version}.root.json").read_bytes()
            version += 1
        return current, data

    def trusted_root(self) -> bytes:
        """The newest root's bytes (``N.root.json``): what a device bundle carries."""
        return self._trusted_root()[1]

    def _state(self) -> _State:
        root, root_bytes = self._trusted_root()
        timestamp = snapshot = targets = None
        if (self.metadata_dir / "timestamp.json").is_file():
            timestamp = self._read("timestamp.json")
            version = timestamp.signed.snapshot_meta.version
            snapshot = self._read(f"{version}.snapshot.json")
            targets = self._read(f"{snapshot.signed.meta['targets.json'].version}.targets.json")
        return _State(root, root_bytes, targets, snapshot, timestamp)

    def _newest_signed_targets(self, root: Root) -> Metadata[Targets] | None:
        """The highest targets version on disk that meets the targets threshold."""
        for version in reversed(self._versions(Targets.type)):
            md: Metadata[Targets] = self._read(f"{version}.targets.json")
            if root.get_verification_result(Targets.type, md.signed_bytes, md.signatures):
                return md
        return None

    def published_targets(self) -> dict[str, tuple[TargetFile, TargetMeta]]:
        """The targets a client sees now, with their parsed custom metadata."""
        state = self._state()
        if state.targets is None:
            return {}
        return {path: (info, TargetMeta.from_custom(info.custom))
                for path, info in state.targets.signed.targets.items()}

    # -- online roles ----------------------------------------------------------------------

    def refresh_online(self, now: datetime | None, server_secret: bytes | None,
                       *, force: bool = False) -> tuple[str, ...]:
        """Re-sign snapshot and timestamp when needed; return the roles re-signed.

        Needed when: the newest threshold-signed targets is not the one in the snapshot,
        a role has less than half its lifetime left, or its signature no longer meets the
        current root (online keys rotated). The server calls this on a timer; the CLI
        after a publish or rotation. Writes ``N.snapshot.json`` then ``timestamp.json``.

        Raises:
            MissingKey: an online key file is missing or sealed and no secret given.
            MetadataExpired: the root is expired (offline root holders must re-sign it).
        """
        now = _utc(now)
        root_md, _ = self._trusted_root()
        root = root_md.signed
        if root.is_expired(now):
            raise MetadataExpired(f"the update root expired at {root.expires.isoformat()}; "
                                  "re-sign it (`tinyward update rotate-root`)")
        targets = self._newest_signed_targets(root)
        if targets is None:
            raise ThresholdNotMet("no targets metadata meets the targets threshold")
        old_snapshot: Metadata[Snapshot] | None = None
        old_timestamp: Metadata[Timestamp] | None = None
        if (self.metadata_dir / "timestamp.json").is_file():
            old_timestamp = self._read("timestamp.json")
            name = f"{old_timestamp.signed.snapshot_meta.version}.snapshot.json"
            if (self.metadata_dir / name).is_file():
                old_snapshot = self._read(name)

        def stale(md: Metadata[Any] | None, role: str) -> bool:
            if md is None:
                return True
            left = md.signed.expires - now
            return (left < self.expiry.of(role) / 2
                    or not root.get_verification_result(role, md.signed_bytes, md.signatures))

        done: list[str] = []
        snapshot = old_snapshot
        if (force or stale(old_snapshot, Snapshot.type) or old_snapshot is None
                or old_snapshot.signed.meta["targets.json"].version != targets.signed.version):
            version = max([*self._versions(Snapshot.type), 0]) + 1
            snapshot = Metadata(Snapshot(version=version, expires=now + self.expiry.snapshot,
                                         meta={"targets.json": MetaFile(targets.signed.version)}))
            snapshot.sign(self._online_signer(Snapshot.type, root, server_secret))
            atomic_write(self.metadata_dir / f"{version}.snapshot.json", _bytes(snapshot), 0o644)
            done.append(Snapshot.type)
        assert snapshot is not None
        if done or force or stale(old_timestamp, Timestamp.type):
            version = (old_timestamp.signed.version if old_timestamp else 0) + 1
            timestamp = Metadata(Timestamp(version=version, expires=now + self.expiry.timestamp,
                                           snapshot_meta=MetaFile(snapshot.signed.version)))
            timestamp.sign(self._online_signer(Timestamp.type, root, server_secret))
            # The commit point of every publish (see the module docstring).
            atomic_write(self.metadata_dir / "timestamp.json", _bytes(timestamp), 0o644)
            done.append(Timestamp.type)
        return tuple(done)

    # -- targets ---------------------------------------------------------------------------

    def _pending(self, role: str) -> Metadata[Any] | None:
        path = self.pending_dir / f"{role}.json"
        if not path.is_file():
            return None
        try:
            return Metadata.from_bytes(path.read_bytes())
        except (OSError, ValueError, DeserializationError) as error:
            raise BadFleet(f"{path} is damaged ({error}); delete it to start over") from None

    def _write_pending(self, role: str, md: Metadata[Any]) -> None:
        self.pending_dir.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        atomic_write(self.pending_dir / f"{role}.json", _bytes(md))

    def add(self, component: str, data: bytes, *, version: str, product_class: str,
            min_tinyward: str = "0.1.0", devices: Sequence[str] = (),
            cohorts: Sequence[str] = (), now: datetime | None = None) -> str:
        """Stage a target: copy it into ``repo/targets/`` and add it to the pending
        targets metadata (published by :meth:`publish`). Returns its target path.

        Raises:
            UnknownComponent: not one of COMPONENTS.
            NotNewer: ``version`` is not above every published or pending version of this
                component for this product class.
            BadTargetMeta: a malformed version, product class, device ID or cohort.
        """
        now = _utc(now)
        if component not in COMPONENTS:
            raise UnknownComponent(f"unknown component {component!r}; the components are "
                                   f"{', '.join(COMPONENTS)}")
        if len(data) > _MAX_TARGET_BYTES:
            raise RepositoryError(f"the file is larger than {_MAX_TARGET_BYTES} bytes")
        meta = TargetMeta.from_custom({
            "component": component, "version": version, "product_class": product_class,
            "min_tinyward": min_tinyward, "devices": list(devices), "cohorts": list(cohorts)})
        state = self._state()
        pending = self._pending(Targets.type)
        if pending is not None and pending.signed.version <= (
                state.targets.signed.version if state.targets else 0):
            pending = None  # left from before a publish that went through another way
        for source in (state.targets, pending):
            if source is None:
                continue
            for path, info in source.signed.targets.items():
                try:
                    other = TargetMeta.from_custom(info.custom)
                except BadTargetMeta:
                    continue
                if (other.component, other.product_class) == (component, product_class) \
                        and meta.version <= other.version:
                    where = "pending" if source is pending else "published"
                    raise NotNewer(f"{component} {meta.version} for {product_class} is not "
                                   f"newer than the {where} {other.version} ({path})")
        name = target_name(meta)
        info = TargetFile.from_data(name, data, ["sha256"])
        info.unrecognized_fields["custom"] = meta.to_custom()
        # Content-addressed: writing it early can overwrite nothing a client relies on.
        atomic_write(self.targets_dir / f"{info.hashes['sha256']}.{name}", data, 0o644)
        if pending is None:
            base = state.targets.signed if state.targets else Targets()
            pending = Metadata(Targets(version=base.version + 1, targets=dict(base.targets)))
        pending.signed.targets[name] = info
        pending.signed.expires = now + self.expiry.targets
        pending.signatures.clear()  # the content changed: earlier signatures are void
        self._write_pending(Targets.type, pending)
        return name

    def publish(self, signers: Sequence[Signer], server_secret: bytes | None,
                now: datetime | None = None) -> SignOutcome:
        """Sign the pending targets (or, with none pending, a re-signed copy of the
        published ones, to extend their expiry) with ``signers``; once the targets
        threshold is met, write it and re-sign snapshot and timestamp.

        Raises:
            MissingKey: a signer's key is not delegated for targets.
            MetadataExpired: the root has expired.
        """
        now = _utc(now)
        state = self._state()
        if state.root.signed.is_expired(now):
            raise MetadataExpired(f"the update root expired at "
                                  f"{state.root.signed.expires.isoformat()}; rotate it first")
        pending = self._pending(Targets.type)
        live_version = state.targets.signed.version if state.targets else 0
        if pending is None or pending.signed.version <= live_version:
            base = state.targets.signed if state.targets else Targets()
            pending = Metadata(Targets(version=live_version + 1,
                                       expires=now + self.expiry.targets,
                                       targets=dict(base.targets)))
        return self._sign_targets(pending, signers, server_secret, now)

    def _sign_targets(self, pending: Metadata[Targets], signers: Sequence[Signer],
                      server_secret: bytes | None, now: datetime) -> SignOutcome:
        root = self._state().root.signed
        allowed = set(root.roles[Targets.type].keyids)
        for signer in signers:
            if signer.public_key.keyid not in allowed:
                raise MissingKey(f"key {self._name_of(signer.public_key.keyid)} is not "
                                 "delegated for targets by the current root")
        if pending.signed.is_expired(now):
            raise MetadataExpired("the pending targets expired before enough holders signed; "
                                  "run `tinyward update publish` again")
        for signer in signers:
            pending.sign(signer, append=True)
        result = root.get_verification_result(Targets.type, pending.signed_bytes,
                                              pending.signatures)
        names = tuple(sorted(self._name_of(k) for k in result.signed))
        if not result.verified:
            self._write_pending(Targets.type, pending)
            return SignOutcome(Targets.type, pending.signed.version, names, result.missing, False)
        version = pending.signed.version
        atomic_write(self.metadata_dir / f"{version}.targets.json", _bytes(pending), 0o644)
        refreshed = self.refresh_online(now, server_secret)
        (self.pending_dir / "targets.json").unlink(missing_ok=True)
        return SignOutcome(Targets.type, version, names, 0, True, refreshed)

    def _name_of(self, keyid: str) -> str:
        for info in self.keys().values():
            if info.keyid == keyid:
                return info.name
        return f"(unknown key {keyid[:12]}…)"

    # -- threshold signing ------------------------------------------------------------------

    def sign(self, role: str, signers: Sequence[Signer], server_secret: bytes | None,
             now: datetime | None = None) -> SignOutcome:
        """Add signatures to the pending ``role`` (``root`` or ``targets``) metadata;
        commit it once its threshold is met.

        Raises:
            RepositoryError: nothing pending for ``role``.
            MissingKey: a key not allowed to sign ``role``.
            MetadataExpired: the pending metadata expired while collecting signatures.
        """
        now = _utc(now)
        if role not in OFFLINE_ROLES:
            raise Misuse(f"only root and targets are threshold-signed offline, not {role!r}")
        pending = self._pending(role)
        if pending is None:
            raise RepositoryError(f"no {role} metadata is waiting for signatures")
        if role == Targets.type:
            return self._sign_targets(pending, signers, server_secret, now)
        return self._sign_root(pending, signers, server_secret, now)

    # -- root rotation ---------------------------------------------------------------------

    def propose_root(self, change: RootChange, new_secrets: Mapping[str, bytes],
                     server_secret: bytes | None, now: datetime | None = None) -> Metadata[Root]:
        """Write the next root (unsigned) to ``pending/root.json``: the current one with
        ``change`` applied and a fresh expiry. New keys are made now; their names are
        the role and the next free number (``root-4``); offline ones are sealed with
        ``new_secrets[name]``. Sign it with :meth:`sign` (``root``).

        Raises:
            MissingKey: a named key is unknown or not in the current root.
            WeakPassphrase: a new passphrase is missing, weak or repeated.
            Misuse: a threshold out of range after the change.
        """
        now = _utc(now)
        current = self._trusted_root()[0].signed
        index = self.keys()
        new = Root.from_dict(current.to_dict())
        new.version = current.version + 1
        new.expires = now + self.expiry.root
        retire = list(change.remove) + list(change.replace)
        for name in retire:
            info = index.get(name)
            if info is None or info.keyid not in current.roles[info.role].keyids:
                raise MissingKey(f"{name} is not a key of the current root")
        grow = [index[name].role for name in change.replace] + list(change.add)
        planned = self._plan_names(index, grow)
        for name, role in planned:
            if role in OFFLINE_ROLES:
                secret = new_secrets.get(name)
                if not secret:
                    raise WeakPassphrase(f"the new key {name} needs a passphrase")
                check_new_passphrase(secret.decode("utf-8", "replace"), f"update {name}")
        _check_secrets_apart([new_secrets[n] for n, r in planned if r in OFFLINE_ROLES])
        for name in retire:
            info = index[name]
            new.revoke_key(info.keyid, info.role)
        made: dict[str, KeyInfo] = {}
        for name, role in planned:
            if role in OFFLINE_ROLES:
                info, signer = self._new_offline_key(role, name, new_secrets[name])
            else:
                info, signer = self._new_online_key(role, name, server_secret)
            made[name] = info
            new.add_key(signer.public_key, role)
        if change.root_threshold is not None:
            new.roles[Root.type].threshold = change.root_threshold
        if change.targets_threshold is not None:
            new.roles[Targets.type].threshold = change.targets_threshold
        for role in (*OFFLINE_ROLES, *ONLINE_ROLES):
            _check_threshold(role, new.roles[role].threshold, len(new.roles[role].keyids))
        self._write_index({**index, **made})
        md = Metadata(new)
        self._write_pending(Root.type, md)
        return md

    @staticmethod
    def _plan_names(index: Mapping[str, KeyInfo], roles: Iterable[str]) -> list[tuple[str, str]]:
        used = set(index)
        planned = []
        for role in roles:
            number = 1
            while f"{role}-{number}" in used:
                number += 1
            used.add(f"{role}-{number}")
            planned.append((f"{role}-{number}", role))
        return planned

    def planned_key_names(self, change: RootChange) -> list[tuple[str, str]]:
        """The names :meth:`propose_root` will give the new keys of ``change`` (so that
        the CLI can ask for their passphrases first)."""
        index = self.keys()
        for name in change.replace:
            if name not in index:
                raise MissingKey(f"the update repository has no key named {name!r}")
        return self._plan_names(index, [index[n].role for n in change.replace] + list(change.add))

    def _sign_root(self, pending: Metadata[Root], signers: Sequence[Signer],
                   server_secret: bytes | None, now: datetime) -> SignOutcome:
        current_md, _ = self._trusted_root()
        current, new = current_md.signed, pending.signed
        if new.version != current.version + 1:
            raise RepositoryError(f"the pending root is version {new.version}, the next is "
                                  f"{current.version + 1}; propose the rotation again")
        allowed = set(current.roles[Root.type].keyids) | set(new.roles[Root.type].keyids)
        for signer in signers:
            if signer.public_key.keyid not in allowed:
                raise MissingKey(f"key {self._name_of(signer.public_key.keyid)} is not a root "
                                 "key of the current or the proposed root")
        if new.is_expired(now):
            raise MetadataExpired("the proposed root expired before enough holders signed; "
                                  "propose it again")
        for signer in signers:
            pending.sign(signer, append=True)
        result = new.get_root_verification_result(current, pending.signed_bytes,
                                                  pending.signatures)
        names = tuple(sorted(self._name_of(k) for k in result.signed))
        missing = max(result.first.missing, result.second.missing)
        if not result.verified:
            self._write_pending(Root.type, pending)
            return SignOutcome(Root.type, new.version, names, missing, False)
        online_changed = any(set(current.roles[r].keyids) != set(new.roles[r].keyids)
                             for r in ONLINE_ROLES)
        if online_changed:
            # Check the new online keys open before the commit, not after.
            for role in ONLINE_ROLES:
                self._online_signer(role, new, server_secret)
        atomic_write(self.metadata_dir / f"{new.version}.root.json", _bytes(pending), 0o644)
        (self.pending_dir / "root.json").unlink(missing_ok=True)
        refreshed = self.refresh_online(now, server_secret, force=online_changed)
        return SignOutcome(Root.type, new.version, names, 0, True, refreshed)

    # -- status ----------------------------------------------------------------------------

    def status(self, now: datetime | None = None) -> dict[str, Any]:
        """What is published, when each role expires, and who signed what (JSON-ready)."""
        now = _utc(now)
        state = self._state()
        root = state.root.signed
        index = self.keys()
        roles: dict[str, Any] = {}
        for role, md in ((Root.type, state.root), (Targets.type, state.targets),
                         (Snapshot.type, state.snapshot), (Timestamp.type, state.timestamp)):
            if md is None:
                continue
            result = root.get_verification_result(role, md.signed_bytes, md.signatures)
            roles[role] = {
                "version": md.signed.version,
                "expires": md.signed.expires.isoformat(),
                "expired": md.signed.is_expired(now),
                "threshold": result.threshold,
                "signatures": len(result.signed),
                "signed_by": sorted(self._name_of(k) for k in result.signed),
                "keys": sorted(self._name_of(k) for k in root.roles[role].keyids),
                "online": role in ONLINE_ROLES,
            }
        targets = []
        if state.targets is not None:
            for path, info in sorted(state.targets.signed.targets.items()):
                targets.append({"path": path, "length": info.length,
                                "sha256": info.hashes.get("sha256"), "custom": info.custom})
        pending = {}
        for role in OFFLINE_ROLES:
            md = self._pending(role)
            if md is None:
                continue
            if role == Root.type:
                res = md.signed.get_root_verification_result(root, md.signed_bytes,
                                                             md.signatures)
                missing, signed = max(res.first.missing, res.second.missing), res.signed
            else:
                one = root.get_verification_result(role, md.signed_bytes, md.signatures)
                missing, signed = one.missing, one.signed
            pending[role] = {"version": md.signed.version, "missing": missing,
                             "signed_by": sorted(self._name_of(k) for k in signed)}
            if role == Targets.type:
                pending[role]["targets"] = sorted(md.signed.targets)
        in_root = {k for r in root.roles.values() for k in r.keyids}
        return {
            "roles": roles,
            "targets": targets,
            "pending": pending,
            "keys": [{"name": i.name, "role": i.role, "keyid": i.keyid,
                      "online": i.online, "in_root": i.keyid in in_root}
                     for i in sorted(index.values(), key=lambda i: (i.role, i.name))],
        }


SecretSource = Callable[[str], bytes]
