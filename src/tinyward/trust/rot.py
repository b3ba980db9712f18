"""The root of trust: where the device root key and the monotonic counters live.

Everything the trusted core protects at rest hangs off one secret, the device root key,
and off a few monotonic counters that detect rollback. On real hardware both live in a
TPM, a secure element or a TrustZone partition, where software cannot read the key out or
turn a counter back. :class:`RootOfTrust` is that interface; the core only ever asks it to
*derive* purpose-bound keys and to read or advance counters.

:class:`FileRootOfTrust` is the default and **a software stand-in for hardware**: the root
key is 32 random bytes in a file with mode 0600, and the counters are a file whose integrity
is protected by an HMAC under a key derived from the root key. It protects against other
users on the machine and against editing or swapping individual files; it cannot protect
against root, against someone who copies the whole device folder, or against rolling the
whole folder back to an earlier copy (root key, counters and records together). See
``docs/trust.md``.

The counter file's integrity check is pure (:func:`encode_counters`, :func:`decode_counters`:
bytes and a MAC key in); :class:`FileRootOfTrust` is the thin adapter that keeps those bytes
on disk. It advances a counter under an exclusive cross-process lock (``counters.lock``
next to the file), so two processes never lose each other's updates.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Protocol

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tinyward._fsutil import atomic_write, create_exclusive
from tinyward.trust import _files
from tinyward.trust.errors import CountersTampered, RootOfTrustError

ROOT_KEY_BYTES = 32
_COUNTERS_MAGIC = b"TWCTR1"
_COUNTERS_MAX_BYTES = 1 << 20


class RootOfTrust(Protocol):
    """What the trusted core needs from hardware. A TPM or secure element implements this."""

    #: A short description shown in status and attestation, e.g. "file (software stand-in)".
    description: str
    #: True only when the root key cannot be read by software.
    hardware_backed: bool

    def derive_key(self, label: str, length: int = 32) -> bytes:
        """Derive a purpose-bound key from the device root key (HKDF-SHA256, ``label`` as info)."""
        ...

    def read_counter(self, name: str) -> int:
        """Return the counter's value (0 if it was never advanced). Raises CountersTampered."""
        ...

    def advance_counter(self, name: str, value: int) -> None:
        """Set the counter to ``value``; it can only move forward. Raises ValueError otherwise."""
        ...


def derive(root_key: bytes, label: str, length: int = 32) -> bytes:
    """HKDF-SHA256 of the root key with ``tinyward/<label>`` as info."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None,
                info=b"tinyward/" + label.encode())
    return hkdf.derive(root_key)


def encode_counters(mac_key: bytes, counters: dict[str, int]) -> bytes:
    """The counter file: magic, canonical CBOR of ``{name: value}``, HMAC-SHA256 over it."""
    body = cbor2.dumps(counters, canonical=True)
    return _COUNTERS_MAGIC + body + hmac.new(mac_key, body, "sha256").digest()


def decode_counters(mac_key: bytes, data: bytes, where: str = "the counter file") -> dict[str, int]:
    """Check and decode :func:`encode_counters` bytes. Raises :class:`CountersTampered`."""
    if len(data) > _COUNTERS_MAX_BYTES or not data.startswith(_COUNTERS_MAGIC):
        raise CountersTampered(f"{where} is not a tinyward counter file")
    body, mac = data[len(_COUNTERS_MAGIC):-32], data[-32:]
    if len(data) < len(_COUNTERS_MAGIC) + 32 or not hmac.compare_digest(
        mac, hmac.new(mac_key, body, "sha256").digest()
    ):
        raise CountersTampered(
            f"{where} failed its integrity check: the version counters were "
            "edited or corrupted, so rollback can no longer be ruled out"
        )
    try:
        counters = cbor2.loads(body)
    except (cbor2.CBORDecodeError, ValueError):
        raise CountersTampered(f"{where} holds an unexpected structure") from None
    if not isinstance(counters, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in counters.items()
    ):
        raise CountersTampered(f"{where} holds an unexpected structure")
    return counters


def advanced(counters: dict[str, int], name: str, value: int) -> dict[str, int] | None:
    """``counters`` with ``name`` moved forward to ``value``; None if it is already there.

    Raises ValueError for a step backwards.
    """
    current = counters.get(name, 0)
    if value < current:
        raise ValueError(f"counter {name!r} cannot go back from {current} to {value}")
    return None if value == current else {**counters, name: value}


class FileRootOfTrust:
    """Software stand-in for a hardware root of trust (see the module docstring)."""

    description = "file root key, mode 0600 (software stand-in for a TPM or secure element)"
    hardware_backed = False

    def __init__(self, root_key_path: Path, counters_path: Path, *,
                 unsafe_no_lock: bool = False) -> None:
        self._root_key_path = Path(root_key_path)
        self._counters_path = Path(counters_path)
        self._lock_path = _files.resolved(self._counters_path.with_name(
            self._counters_path.name + ".lock"))
        self._unsafe_no_lock = unsafe_no_lock
        self._root_key = self._load_root_key()
        self._mac_key = self.derive_key("counters-mac")

    @classmethod
    def create(cls, root_key_path: Path, counters_path: Path) -> FileRootOfTrust:
        """Make a new root key. Refuses to replace an existing one (that would orphan every key)."""
        create_exclusive(Path(root_key_path), os.urandom(ROOT_KEY_BYTES))
        return cls(root_key_path, counters_path)

    def _load_root_key(self) -> bytes:
        try:
            stat = self._root_key_path.stat()
            data = self._root_key_path.read_bytes()
        except FileNotFoundError:
            raise RootOfTrustError(
                f"no root key at {self._root_key_path}: this folder was not initialised as a device"
            ) from None
        if stat.st_mode & 0o077:
            raise RootOfTrustError(
                f"{self._root_key_path} is readable by other users "
                f"(mode {stat.st_mode & 0o777:o}); "
                "refusing to use it: fix with chmod 600 only if you are sure nobody copied it"
            )
        if len(data) != ROOT_KEY_BYTES:
            raise RootOfTrustError(f"{self._root_key_path} is {len(data)} bytes, expected 32")
        return data

    def derive_key(self, label: str, length: int = 32) -> bytes:
        return derive(self._root_key, label, length)

    def _read_counters(self) -> dict[str, int]:
        try:
            data = _files.read_limited(self._counters_path, _COUNTERS_MAX_BYTES)
        except ValueError:
            raise CountersTampered(
                f"{self._counters_path} is not a tinyward counter file"
            ) from None
        return (
            {} if data is None else decode_counters(self._mac_key, data, str(self._counters_path))
        )

    def read_counter(self, name: str) -> int:
        return self._read_counters().get(name, 0)

    def advance_counter(self, name: str, value: int) -> None:
        # Read, change and rewrite under the lock: unlocked, two processes each rewrite
        # the whole file from their own stale copy and one's advance is lost.
        with _files.lock_for(self._lock_path, self._unsafe_no_lock):
            counters = advanced(self._read_counters(), name, value)
            if counters is not None:
                atomic_write(self._counters_path, encode_counters(self._mac_key, counters))
