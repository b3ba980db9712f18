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

import functools
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from securesystemslib.signer import Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from tinyward._fsutil import PRIVATE_DIR_MODE, atomic_write, fsync_directory
from tinyward.errors import Misuse
from tinyward.fleet.errors import BadFleet, WeakPassphrase
from tinyward.fleet.passphrase import check_new_passphrase
from tinyward.fleet.tokens import SigningToken
from tinyward.fleet.update_keys import (
    DEFAULT_EXPIRY,
    OFFLINE_ROLES,
    ONLINE_ROLES,
    UPDATE_SIGNING_KEY,
    UPDATE_SIGNING_PURPOSE,
    BadThreshold,
    Expiry,
    KeyInfo,
    KeyRing,
    MetadataExpired,
    MissingKey,
    NotNewer,
    RepositoryError,
    ThresholdNotMet,
    TokenSigner,
    UnknownComponent,
    UnknownTarget,
    check_secrets_apart,
    check_threshold,
    read_regular,
)
from tinyward.trust._files import exclusive
from tinyward.update.errors import BadTargetMeta
from tinyward.update.meta import COMPONENTS, TargetMeta

__all__ = [
    "DEFAULT_EXPIRY",
    "OFFLINE_ROLES",
    "ONLINE_ROLES",
    "UPDATE_SIGNING_KEY",
    "BadThreshold",
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
    "UnknownTarget",
    "UpdateRepository",
]

_M = TypeVar("_M", bound=Callable[..., Any])
_MAX_TARGET_BYTES = 512 * 1024 * 1024
_MAX_METADATA_BYTES = 4 * 1024 * 1024
_SLACK = timedelta(minutes=5)
_SERVED_METADATA = re.compile(
    r"metadata/(timestamp|[1-9][0-9]{0,8}\.(root|snapshot|targets))\.json")
_SERVED_TARGET = re.compile(r"targets/[0-9a-f]{64}\.[A-Za-z0-9][A-Za-z0-9_.-]{0,150}")
_VERSIONED = re.compile(r"^([1-9][0-9]{0,8})\.(root|targets|snapshot)\.json$")


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



def _utc(now: datetime | None) -> datetime:
    if now is None:
        now = datetime.now(UTC)
    if now.tzinfo is None:
        raise Misuse("times must be timezone-aware (UTC)")
    # TUF writes whole seconds; keep ours whole so that what we sign is what we read back.
    return now.astimezone(UTC).replace(microsecond=0)


def _bytes(md: Metadata[Any]) -> bytes:
    return md.to_bytes(JSONSerializer(compact=False))




def target_name(meta: TargetMeta) -> str:
    """The TUF target path of a component release (flat: ``<class>.<component>-<version>``)."""
    return f"{meta.product_class}.{meta.component}-{meta.version}"


def _locked(method: _M) -> _M:
    """Run ``method`` holding the repository's lock (re-entrant in a thread): the server's
    timed refresh and a publish at the console must not both write snapshot N."""

    @functools.wraps(method)
    def wrapper(self: UpdateRepository, *args: Any, **kwargs: Any) -> Any:
        self._require()
        with exclusive(Path(os.path.realpath(self.base / ".lock"))):
            return method(self, *args, **kwargs)

    return cast(_M, wrapper)


class UpdateRepository:
    """The update repository of the fleet in ``fleet_dir`` (see the module docstring)."""

    def __init__(self, fleet_dir: Path, *, keys_dir: Path | None = None,
                 expiry: Expiry = DEFAULT_EXPIRY) -> None:
        self.fleet_dir = Path(fleet_dir)
        self.keys_dir = Path(keys_dir) if keys_dir is not None else self.fleet_dir / "keys"
        self.server_dir = self.fleet_dir / "server"
        self.expiry = expiry
        self._at(self.fleet_dir / "updates")

    def _at(self, base: Path) -> None:
        self.base = base
        self.metadata_dir = base / "repo" / "metadata"
        self.targets_dir = base / "repo" / "targets"
        self.pending_dir = base / "pending"
        self.keyring = KeyRing(base, self.keys_dir, self.server_dir)

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
            BadThreshold: thresholds or key counts out of range.
            RepositoryError: the fleet already has an update repository.
            BadFleet: ``fleet_dir`` is not a fleet.
        """
        now = _utc(now)
        repo = cls(fleet_dir, keys_dir=keys_dir, expiry=expiry)
        if not (repo.fleet_dir / "fleet.json").is_file():
            raise BadFleet(f"{repo.fleet_dir} is not a tinyward fleet (no fleet.json)")
        final = repo.base
        if final.exists():
            raise RepositoryError(f"{final} already holds an update repository")
        targets_count = len(targets_secrets) + (1 if update_signing is not None else 0)
        check_threshold("root", root_threshold, len(root_secrets))
        check_threshold("targets", targets_threshold, targets_count)
        for number, secret in enumerate(root_secrets, 1):
            check_new_passphrase(secret.decode("utf-8", "replace"), f"update root-{number}")
        for number, secret in enumerate(targets_secrets, 2 if update_signing else 1):
            check_new_passphrase(secret.decode("utf-8", "replace"), f"update targets-{number}")
        check_secrets_apart([*root_secrets, *targets_secrets, server_secret])

        # Built in a staging folder and renamed into place: a crash leaves no half a
        # repository (at most unreferenced new key files, overwritten by the next init).
        for folder in (repo.keys_dir, repo.server_dir):
            folder.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".updates-", dir=repo.fleet_dir))
        try:
            repo._at(staging)
            repo._populate(now, root_secrets, targets_secrets, update_signing, server_secret,
                           root_threshold, targets_threshold)
            try:
                os.rename(staging, final)  # refuses a non-empty target: two inits, one wins
            except OSError:
                raise RepositoryError(f"{final} already holds an update repository") from None
            fsync_directory(repo.fleet_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        repo._at(final)
        return repo

    def _populate(self, now: datetime, root_secrets: Sequence[bytes],
                  targets_secrets: Sequence[bytes], update_signing: SigningToken | None,
                  server_secret: bytes | None, root_threshold: int,
                  targets_threshold: int) -> None:
        repo, expiry = self, self.expiry
        for folder in (repo.metadata_dir, repo.targets_dir, repo.pending_dir):
            folder.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        index: dict[str, KeyInfo] = {}
        signers: dict[str, list[Signer]] = {r: [] for r in (*OFFLINE_ROLES, *ONLINE_ROLES)}
        for position, secret in enumerate(root_secrets, 1):
            info, signer = repo.keyring.new_offline_key("root", f"root-{position}", secret)
            index[info.name] = info
            signers["root"].append(signer)
        if update_signing is not None:
            signer = TokenSigner(update_signing)
            index[UPDATE_SIGNING_KEY] = KeyInfo(UPDATE_SIGNING_KEY, "targets",
                                                signer.public_key.keyid,
                                                f"{UPDATE_SIGNING_PURPOSE}.key",
                                                UPDATE_SIGNING_PURPOSE)
            signers["targets"].append(signer)
        for position, secret in enumerate(targets_secrets, 2 if update_signing else 1):
            info, signer = repo.keyring.new_offline_key("targets", f"targets-{position}", secret)
            index[info.name] = info
            signers["targets"].append(signer)
        for role in ONLINE_ROLES:
            info, signer = repo.keyring.new_online_key(role, f"{role}-1", server_secret)
            index[info.name] = info
            signers[role].append(signer)
        repo.keyring.write_index(index)

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

    # -- the key index ---------------------------------------------------------------------

    # -- keys (tinyward.fleet.update_keys) -----------------------------------------------------

    @property
    def exists(self) -> bool:
        return self.keyring.exists

    def _require(self) -> None:
        self.keyring.require()

    def keys(self) -> dict[str, KeyInfo]:
        """Every key the repository has made, by name (retired ones too)."""
        return self.keyring.keys()

    def offline_key(self, name: str, *, need_file: bool = True) -> KeyInfo:
        """See :meth:`KeyRing.offline_key` (checks a key before its passphrase is asked)."""
        return self.keyring.offline_key(name, need_file=need_file)

    def offline_signer(self, name: str, secret: bytes,
                       token: SigningToken | None = None) -> Signer:
        """See :meth:`KeyRing.offline_signer`."""
        return self.keyring.offline_signer(name, secret, token)

    def _online_signer(self, role: str, root: Root, server_secret: bytes | None) -> Signer:
        return self.keyring.online_signer(role, root, server_secret)

    def _name_of(self, keyid: str) -> str:
        return self.keyring.name_of(keyid)

    def _refuse_repeat(self, pending: Metadata[Any], signers: Sequence[Signer]) -> None:
        """A holder who signs twice brings the threshold no closer: say so, loudly."""
        for signer in signers:
            if signer.public_key.keyid in pending.signatures:
                raise ThresholdNotMet(
                    f"key {self._name_of(signer.public_key.keyid)} has already signed the "
                    f"pending {pending.signed.type} version {pending.signed.version}; the "
                    "threshold needs signatures from other holders (`tinyward update status`)")

    # -- reading the published state ---------------------------------------------------------

    def _read(self, name: str) -> Metadata[Any]:
        return self._read_raw(name)[0]

    def _read_raw(self, name: str) -> tuple[Metadata[Any], bytes]:
        """The metadata file ``name`` and the very bytes it was parsed from."""
        path = self.metadata_dir / name
        try:
            data = read_regular(path, _MAX_METADATA_BYTES)
            return Metadata.from_bytes(data), data
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
        # The bytes returned are the ones verified: a file swapped after the check (read
        # a second time) could hand a device bundle a root nobody verified.
        current, data = self._read_raw("1.root.json")
        try:
            current.signed.verify_delegate(Root.type, current.signed_bytes, current.signatures)
        except UnsignedMetadataError as error:
            raise BadFleet(f"1.root.json is not signed by its own threshold ({error})") from None
        version = 2
        while (self.metadata_dir / f"{version}.root.json").is_file():
            candidate, candidate_data = self._read_raw(f"{version}.root.json")
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
            current, data = candidate, candidate_data
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

    def served_file(self, url_path: str) -> bytes:
        """The bytes a TUF client asks for at ``url_path`` (relative to the repository:
        ``metadata/N.root.json``, ``metadata/timestamp.json``, ``metadata/N.snapshot.json``,
        ``metadata/N.targets.json`` or ``targets/<sha256>.<name>``), for whatever serves
        the repository (the fleet server's delivery). Only those shapes: no other file of
        the fleet folder can be named.

        Raises:
            UnknownTarget: another shape, or no such file.
        """
        if not isinstance(url_path, str) or len(url_path) > 300:
            raise UnknownTarget("not a repository path")
        if _SERVED_METADATA.fullmatch(url_path):
            path = self.metadata_dir / url_path.removeprefix("metadata/")
            limit = _MAX_METADATA_BYTES
        elif _SERVED_TARGET.fullmatch(url_path):
            path = self.targets_dir / url_path.removeprefix("targets/")
            limit = _MAX_TARGET_BYTES
        else:
            raise UnknownTarget(f"{url_path[:80]!r} is not a repository path")
        try:
            return read_regular(path, limit)
        except OSError:
            raise UnknownTarget(f"{url_path[:80]!r} is not in the repository") from None
        except ValueError:
            raise UnknownTarget(f"{url_path[:80]!r} is larger than the repository allows") \
                from None

    def published_targets(self) -> dict[str, tuple[TargetFile, TargetMeta]]:
        """The targets a client sees now, with their parsed custom metadata."""
        state = self._state()
        if state.targets is None:
            return {}
        return {path: (info, TargetMeta.from_custom(info.custom))
                for path, info in state.targets.signed.targets.items()}

    # -- online roles ----------------------------------------------------------------------

    @_locked
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
        if old_snapshot is not None and (
                targets.signed.version < old_snapshot.signed.meta["targets.json"].version):
            # Clients would refuse it (rollback); never publish it.
            raise BadFleet(f"the newest threshold-signed targets is version "
                           f"{targets.signed.version}, below the published "
                           f"{old_snapshot.signed.meta['targets.json'].version}: targets "
                           "metadata is missing or damaged in the repository")

        def stale(md: Metadata[Any] | None, role: str) -> bool:
            if md is None:
                return True
            left = md.signed.expires - now
            # Valid for longer than a fresh signature would be: signed while the clock was
            # ahead. Re-sign now (a higher version, which devices then require) rather than
            # leave a long freeze window to whoever kept a copy.
            return (left < self.expiry.of(role) / 2 or left > self.expiry.of(role) + _SLACK
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
        if snapshot is None:  # unreachable: a missing snapshot is always re-made above
            raise Misuse("no snapshot to time-stamp (a bug)")
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
            md: Metadata[Any] = Metadata.from_bytes(read_regular(path, _MAX_METADATA_BYTES))
            if md.signed.type != role:
                raise ValueError(f"it holds {md.signed.type} metadata")
        except (OSError, ValueError, DeserializationError) as error:
            raise BadFleet(f"{path} is damaged ({error}); delete it to start over") from None
        return md

    def _write_pending(self, role: str, md: Metadata[Any]) -> None:
        self.pending_dir.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        atomic_write(self.pending_dir / f"{role}.json", _bytes(md))

    @_locked
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

    @_locked
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
        elif pending.signed.is_expired(now):
            # Its holders took too long: renew it; what they signed is void (it changes).
            pending.signed.expires = now + self.expiry.targets
            pending.signatures.clear()
        return self._sign_targets(pending, signers, server_secret, now)

    def _refuse_tampered(self, pending: Metadata[Any], valid: Iterable[str],
                         delegated: Iterable[str]) -> None:
        """Every signature already on pending metadata by a key the root delegates must
        verify over what it holds now: tinyward voids them itself whenever the content
        changes (:meth:`add`), so one that does not was made over other content, and the
        file was edited between holders. (A key retired by a rotation meanwhile is only
        void: it no longer counts.)"""
        void = sorted(set(pending.signatures) & set(delegated) - set(valid))
        if void:
            raise BadFleet(
                f"the pending {pending.signed.type} metadata was changed after "
                f"{', '.join(self._name_of(k) for k in void)} signed it (the signature no "
                "longer verifies): someone edited updates/pending/ between holders. Check "
                "it with `tinyward update status`; delete it and start over")

    def _sign_targets(self, pending: Metadata[Targets], signers: Sequence[Signer],
                      server_secret: bytes | None, now: datetime) -> SignOutcome:
        state = self._state()
        root = state.root.signed
        live = state.targets.signed.version if state.targets else 0
        if pending.signed.version <= live:
            # An old pending file put back (a replay) would rewrite a published version.
            raise RepositoryError(
                f"the pending targets is version {pending.signed.version}, not above the "
                f"published {live}: it is stale (or replayed); `tinyward update publish` "
                "starts the next version")
        self._refuse_tampered(pending, root.get_verification_result(
            Targets.type, pending.signed_bytes, pending.signatures).signed,
            root.roles[Targets.type].keyids)
        allowed = set(root.roles[Targets.type].keyids)
        for signer in signers:
            if signer.public_key.keyid not in allowed:
                raise MissingKey(f"key {self._name_of(signer.public_key.keyid)} is not "
                                 "delegated for targets by the current root")
        if pending.signed.is_expired(now):
            raise MetadataExpired("the pending targets expired before enough holders signed; "
                                  "renew it with `tinyward update publish` (the signatures "
                                  "collected so far are void)")
        self._refuse_repeat(pending, signers)
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

    # -- threshold signing ------------------------------------------------------------------

    @_locked
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

    @_locked
    def propose_root(self, change: RootChange, new_secrets: Mapping[str, bytes],
                     server_secret: bytes | None, now: datetime | None = None) -> Metadata[Root]:
        """Write the next root (unsigned) to ``pending/root.json``: the current one with
        ``change`` applied and a fresh expiry. New keys are made now; their names are
        the role and the next free number (``root-4``); offline ones are sealed with
        ``new_secrets[name]``. Sign it with :meth:`sign` (``root``).

        Raises:
            MissingKey: a named key is unknown or not in the current root.
            WeakPassphrase: a new passphrase is missing, weak or repeated.
            BadThreshold: a threshold out of range after the change.
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
        planned = self.keyring.plan_names(index, grow)
        for name, role in planned:
            if role in OFFLINE_ROLES:
                secret = new_secrets.get(name)
                if not secret:
                    raise WeakPassphrase(f"the new key {name} needs a passphrase")
                check_new_passphrase(secret.decode("utf-8", "replace"), f"update {name}")
        check_secrets_apart([new_secrets[n] for n, r in planned if r in OFFLINE_ROLES])
        for name in retire:
            info = index[name]
            new.revoke_key(info.keyid, info.role)
        made: dict[str, KeyInfo] = {}
        for name, role in planned:
            if role in OFFLINE_ROLES:
                info, signer = self.keyring.new_offline_key(role, name, new_secrets[name])
            else:
                info, signer = self.keyring.new_online_key(role, name, server_secret)
            made[name] = info
            new.add_key(signer.public_key, role)
        if change.root_threshold is not None:
            new.roles[Root.type].threshold = change.root_threshold
        if change.targets_threshold is not None:
            new.roles[Targets.type].threshold = change.targets_threshold
        for role in (*OFFLINE_ROLES, *ONLINE_ROLES):
            check_threshold(role, new.roles[role].threshold, len(new.roles[role].keyids))
        self.keyring.write_index({**index, **made})
        md = Metadata(new)
        self._write_pending(Root.type, md)
        return md


    def planned_key_names(self, change: RootChange) -> list[tuple[str, str]]:
        """The names :meth:`propose_root` will give the new keys of ``change`` (so that
        the CLI can ask for their passphrases first)."""
        index = self.keys()
        for name in change.replace:
            if name not in index:
                raise MissingKey(f"the update repository has no key named {name!r}")
        roles = [index[n].role for n in change.replace] + list(change.add)
        return self.keyring.plan_names(index, roles)

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
        self._refuse_tampered(pending, new.get_root_verification_result(
            current, pending.signed_bytes, pending.signatures).signed, allowed)
        self._refuse_repeat(pending, signers)
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
            if isinstance(md.signed, Root):
                res = md.signed.get_root_verification_result(root, md.signed_bytes,
                                                             md.signatures)
                missing, signed = max(res.first.missing, res.second.missing), res.signed
            else:
                one = root.get_verification_result(role, md.signed_bytes, md.signatures)
                missing, signed = one.missing, one.signed
            pending[role] = {"version": md.signed.version, "missing": missing,
                             "signed_by": sorted(self._name_of(k) for k in signed)}
            if isinstance(md.signed, Targets):
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


