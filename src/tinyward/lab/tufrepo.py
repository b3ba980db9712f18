"""A small TUF repository for update tests and benchmarks, written with ``tuf.api.metadata``.

Until the fleet's own repository (``tinyward.fleet.update_repo``) is on main, tests and
``tinyward bench update`` build
one here, laid out as the fleet's is (``repo/metadata/N.root.json``, ``timestamp.json``,
``N.snapshot.json``, ``N.targets.json``; ``repo/targets/<sha256>.<name>``) so the fleet
server's chunk delivery serves it unchanged. Attack tests tamper with what it wrote.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from tinyward.update.meta import TargetMeta, Version

PRODUCT = "pump-sensor"
ROLES = ("root", "targets", "snapshot", "timestamp")


def _expiry(days: float = 30) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)


class TufRepo:
    """One root key per role (thresholds of one), consistent snapshots, hash-prefixed
    targets. ``publish()`` writes a new timestamp, snapshot and targets version."""

    def __init__(self, directory: Path, targets_threshold: int = 1) -> None:
        """``targets_threshold``: that many targets keys, all needed."""
        self.dir = Path(directory)
        self.metadata_dir = self.dir / "metadata"
        self.targets_dir = self.dir / "targets"
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self.signers = {role: CryptoSigner.generate_ed25519() for role in ROLES}
        root = Root(expires=_expiry(365), consistent_snapshot=True)
        for role in ROLES:
            root.add_key(self.signers[role].public_key, role)
        self.targets_signers = [self.signers["targets"]]
        for _ in range(targets_threshold - 1):
            extra = CryptoSigner.generate_ed25519()
            root.add_key(extra.public_key, "targets")
            self.targets_signers.append(extra)
        root.roles["targets"].threshold = targets_threshold
        self.root = Metadata(root)
        self.targets = Metadata(Targets(expires=_expiry()))
        self.snapshot = Metadata(Snapshot(expires=_expiry()))
        self.timestamp = Metadata(Timestamp(expires=_expiry(1)))
        self._write_root()
        self.publish()

    @property
    def root_bytes(self) -> bytes:
        """The root version 1: the device's trust anchor (as a bundle would carry it)."""
        return (self.metadata_dir / "1.root.json").read_bytes()

    def _write(self, metadata: Metadata[Any], name: str) -> None:
        (self.metadata_dir / name).write_bytes(metadata.to_bytes(JSONSerializer(compact=True)))

    def _write_root(self) -> None:
        self.root.signatures.clear()
        self.root.sign(self.signers["root"])
        self._write(self.root, f"{self.root.signed.version}.root.json")

    def add_target(self, component: str, version: str, data: bytes, *,
                   product_class: str = PRODUCT, name: str | None = None,
                   **custom: Any) -> str:
        """Add a target (file written hash-prefixed); returns its target path."""
        path = name or f"{component}-{version}.bin"
        meta = TargetMeta(component, Version.parse(version), product_class, Version(0, 1, 0))
        target = TargetFile.from_data(path, data, ["sha256"])
        target.unrecognized_fields["custom"] = {**meta.to_custom(), **custom}
        self.targets.signed.targets[path] = target
        digest = hashlib.sha256(data).hexdigest()
        (self.targets_dir / f"{digest}.{path}").write_bytes(data)
        return path

    def metadata(self, name: str) -> Path:
        return self.metadata_dir / name

    def target_file(self, path: str) -> Path:
        digest = self.targets.signed.targets[path].hashes["sha256"]
        return self.targets_dir / f"{digest}.{path}"

    def publish(self, *, timestamp_expires: datetime | None = None,
                targets_signer: Any = None, timestamp_signer: Any = None) -> None:
        """New targets, snapshot and timestamp versions, signed (by the role's key unless
        another signer is given: an attack)."""
        self.targets.signed.version += 1 if self.targets.signatures else 0
        self.targets.signed.expires = _expiry()
        self.targets.signatures.clear()
        for signer in [targets_signer] if targets_signer else self.targets_signers:
            self.targets.sign(signer, append=True)
        self._write(self.targets, f"{self.targets.signed.version}.targets.json")
        self.snapshot.signed.version += 1 if self.snapshot.signatures else 0
        self.snapshot.signed.meta["targets.json"] = MetaFile(self.targets.signed.version)
        self.snapshot.signatures.clear()
        self.snapshot.sign(self.signers["snapshot"])
        self._write(self.snapshot, f"{self.snapshot.signed.version}.snapshot.json")
        self.timestamp.signed.version += 1 if self.timestamp.signatures else 0
        self.timestamp.signed.snapshot_meta = MetaFile(self.snapshot.signed.version)
        self.timestamp.signed.expires = timestamp_expires or _expiry(1)
        self.timestamp.signatures.clear()
        self.timestamp.sign(timestamp_signer or self.signers["timestamp"])
        self._write(self.timestamp, "timestamp.json")
