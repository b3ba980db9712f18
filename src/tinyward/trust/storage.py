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

What a software-only root of trust cannot protect against: see ``trust/rot.py``.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tinyward._fsutil import atomic_write, make_private_dir
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


class ProtectedStorage:
    """Authenticated-encrypted, rollback-checked named records in one folder."""

    def __init__(self, directory: Path, root: RootOfTrust, limits: StorageLimits | None = None):
        self._directory = Path(directory)
        make_private_dir(self._directory)
        self._root = root
        self._aead = AESGCM(root.derive_key("protected-storage/aes-256-gcm"))
        self._limits = limits or StorageLimits()

    @staticmethod
    def _check_name(name: str) -> None:
        if not _NAME.match(name):
            raise Misuse(
                f"record name {name!r} must be 1-64 characters of a-z, 0-9, '.', '_' or '-'"
            )

    def _path(self, name: str) -> Path:
        return self._directory / f"{name}.rec"

    @staticmethod
    def _aad(name: str, version: int) -> bytes:
        return b"tinyward-protected-storage/1\x00" + name.encode() + struct.pack(">Q", version)

    def _counter(self, name: str) -> str:
        return f"storage/{name}"

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
        # A crash may have left the file one version ahead of the counter, holding a value
        # that was never acknowledged to the caller; overwriting it at the same version is fine.
        version = self._root.read_counter(self._counter(name)) + 1
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, bytes(value), self._aad(name, version))
        atomic_write(self._path(name), _HEADER.pack(_MAGIC, version, nonce) + sealed)
        self._root.advance_counter(self._counter(name), version)
        return version

    def read(self, name: str) -> bytes:
        """Return the verified value of ``name``.

        Raises :class:`RecordMissing`, :class:`RecordTampered` or :class:`RecordRolledBack`.
        """
        self._check_name(name)
        committed = self._root.read_counter(self._counter(name))
        path = self._path(name)
        try:
            size = path.stat().st_size
            if size > self._limits.max_record_bytes + _HEADER.size + 16:
                raise RecordTampered(f"record {name!r} is {size} bytes, larger than any record")
            data = path.read_bytes()
        except FileNotFoundError:
            if committed:
                raise RecordMissing(
                    f"record {name!r} (version {committed}) is missing: deleted or rolled back"
                ) from None
            raise RecordMissing(f"no record named {name!r}") from None
        if len(data) < _HEADER.size + 16 or not data.startswith(_MAGIC):
            raise RecordTampered(f"record {name!r} is truncated or not a protected record")
        _, version, nonce = _HEADER.unpack(data[: _HEADER.size])
        try:
            value = self._aead.decrypt(nonce, data[_HEADER.size:], self._aad(name, version))
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
        if version == committed + 1:
            # The write completed but the counter did not: finish the commit.
            self._root.advance_counter(self._counter(name), version)
        return value
