"""Protected storage: named records, encrypted and authenticated, rollback-checked.

Each record is one file ``<name>.rec``::

    magic "TWPS1" | version (8 bytes, big-endian) | nonce (12 bytes) | AES-256-GCM ciphertext+tag

The AEAD key is derived from the root of trust; the associated data binds the record's
*name* and *version*, so a flipped byte, a truncated file or a record copied over another
name fails authentication (:class:`RecordTampered`). Each record's version is also kept
apart, in a monotonic counter of the root of trust; an authentic record older than its
counter is a rollback (:class:`RecordRolledBack`). The store never returns unverified data.

Writes are atomic (temp file, fsync, rename, directory fsync) and happen *before* the
counter advances. A crash between the two leaves a record one version ahead of its
counter, which reads as the new value (and repairs the counter); a crash before the
rename leaves the old record. So after a crash every record reads as its old or its new
value, never an error.

Every read and write holds the folder's exclusive lock, taken by the store itself, so
several processes on one device folder never interleave a read-modify-write.

The sealing and checking of record bytes are pure functions (:func:`seal_record`,
:func:`open_record`); the folder is an adapter (:class:`RecordFolder`, on disk
``trust/_files.py``). What a software-only root of trust cannot protect against: see
``trust/rot.py``.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tinyward.errors import Misuse
from tinyward.trust.errors import RecordMissing, RecordRolledBack, RecordTampered
from tinyward.trust.rot import RootOfTrust

_MAGIC = b"TWPS1"
_HEADER = struct.Struct(">5sQ12s")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class StorageLimits:
    """Limits on what one record may hold (a record is read whole into memory)."""

    max_record_bytes: int = 1 << 20


class RecordFolder(Protocol):
    """Where sealed records are kept (:class:`tinyward.trust._files.FileFolder` on disk)."""

    def read(self, name: str, max_bytes: int) -> bytes | None:
        """The stored bytes, None if absent; ValueError if over ``max_bytes``."""
        ...

    def write(self, name: str, data: bytes) -> None:
        """Replace atomically: a crash leaves the old bytes or the new, never a mix."""
        ...

    def names(self, prefix: str = "") -> list[str]: ...

    def lock(self, unsafe_no_lock: bool = False) -> AbstractContextManager[None]:
        """An exclusive lock over the folder, shared by every process, re-entrant."""
        ...


def _aad(name: str, version: int) -> bytes:
    return b"tinyward-protected-storage/1\x00" + name.encode() + struct.pack(">Q", version)


def seal_record(aead: AESGCM, name: str, version: int, value: bytes) -> bytes:
    """The bytes of record ``name`` at ``version`` (pure, apart from a random nonce)."""
    nonce = os.urandom(12)
    return _HEADER.pack(_MAGIC, version, nonce) + aead.encrypt(nonce, value, _aad(name, version))


def open_record(aead: AESGCM, name: str, data: bytes, committed: int) -> tuple[int, bytes]:
    """Check the bytes of record ``name`` against its ``committed`` version: ``(version, value)``.

    The version may be one ahead of the counter (a write that crashed before its commit).
    Raises :class:`RecordTampered` or :class:`RecordRolledBack`.
    """
    if len(data) < _HEADER.size + 16 or not data.startswith(_MAGIC):
        raise RecordTampered(f"record {name!r} is truncated or not a protected record")
    _, version, nonce = _HEADER.unpack(data[: _HEADER.size])
    try:
        value = aead.decrypt(nonce, data[_HEADER.size:], _aad(name, version))
    except InvalidTag:
        raise RecordTampered(
            f"record {name!r} failed authentication: it was altered, truncated, "
            "or copied from another record or device"
        ) from None
    if version < committed:
        raise RecordRolledBack(
            f"record {name!r} is version {version} but version {committed} was committed: "
            "an older copy was put back"
        )
    if version > committed + 1:
        raise RecordTampered(
            f"record {name!r} claims version {version}, ahead of the committed {committed}"
        )
    return version, value


class ProtectedStorage:
    """Authenticated-encrypted, rollback-checked named records in one folder.

    Every operation holds the folder's exclusive lock, so processes sharing a device folder
    cannot interleave a read-modify-write (a reused version would let an older record with
    the same version be put back undetected). :meth:`transaction` holds it across several
    operations. ``unsafe_no_lock`` exists only to show that race in tests.
    """

    def __init__(self, directory: Path | RecordFolder, root: RootOfTrust,
                 limits: StorageLimits | None = None, *, unsafe_no_lock: bool = False):
        if isinstance(directory, (str, Path)):
            from tinyward.trust._files import FileFolder  # the disk adapter

            directory = FileFolder(Path(directory), ".rec")
        self._folder: RecordFolder = directory
        self._root = root
        self._aead = AESGCM(root.derive_key("protected-storage/aes-256-gcm"))
        self._limits = limits or StorageLimits()
        self._unsafe_no_lock = unsafe_no_lock

    @staticmethod
    def _check_name(name: str) -> None:
        if not _NAME.match(name):
            raise Misuse(
                f"record name {name!r} must be 1-64 characters of a-z, 0-9, '.', '_' or '-'"
            )

    def _counter(self, name: str) -> str:
        return f"storage/{name}"

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the storage lock across several reads and writes (e.g. check-then-update)."""
        with self._folder.lock(self._unsafe_no_lock):
            yield

    def names(self, prefix: str = "") -> list[str]:
        """The names of the stored records that start with ``prefix``."""
        return [n for n in self._folder.names(prefix) if _NAME.match(n)]

    def version(self, name: str) -> int:
        """The committed version of ``name`` (0 if it was never written)."""
        self._check_name(name)
        return self._root.read_counter(self._counter(name))

    def exists(self, name: str) -> bool:
        """True if the record was ever written (its counter is above zero)."""
        return self.version(name) > 0

    def write(self, name: str, value: bytes) -> int:
        """Atomically replace record ``name`` with ``value``; return its new version."""
        self._check_name(name)
        if len(value) > self._limits.max_record_bytes:
            raise Misuse(f"record {name!r} would be {len(value)} bytes, over the limit")
        with self.transaction():
            # A crash may have left the file one version ahead of the counter, holding a
            # value never acknowledged to the caller; overwriting it at that version is fine.
            version = self._root.read_counter(self._counter(name)) + 1
            self._folder.write(name, seal_record(self._aead, name, version, bytes(value)))
            self._root.advance_counter(self._counter(name), version)
        return version

    def read(self, name: str) -> bytes:
        """Return the verified value of ``name``.

        Raises :class:`RecordMissing`, :class:`RecordTampered` or :class:`RecordRolledBack`.
        """
        self._check_name(name)
        with self.transaction():
            committed = self._root.read_counter(self._counter(name))
            limit = self._limits.max_record_bytes + _HEADER.size + 16
            try:
                data = self._folder.read(name, limit)
            except ValueError:
                raise RecordTampered(f"record {name!r} is larger than any record") from None
            if data is None:
                if committed:
                    raise RecordMissing(
                        f"record {name!r} (version {committed}) is missing: deleted or rolled back"
                    )
                raise RecordMissing(f"no record named {name!r}")
            version, value = open_record(self._aead, name, data, committed)
            if version == committed + 1:
                # The write completed but the counter did not: finish the commit.
                self._root.advance_counter(self._counter(name), version)
        return value
