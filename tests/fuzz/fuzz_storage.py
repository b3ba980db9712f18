"""atheris harness: :meth:`tinyward.trust.storage.ProtectedStorage.read` of files an
attacker with disk access controls.

One store, made at start-up under :func:`~tests.fuzz.harness.workdir`, holds record
``rec`` at version 3 and record ``other``. Before each input the harness puts the
counter file back as it was, then the first byte chooses what the rest is:

- 0 — the bytes of ``rec.rec`` (flipped, truncated, an old copy, another record ...);
- 1 — a record the harness seals with the store's real key: the next byte picks the
  version (1 to 5 around the committed 3, or 2**64 - 1), the one after the name it is
  sealed for (``rec``, or ``other`` = a swapped record), the rest is the value. This
  reaches the rollback and counter-repair rules behind the authentication;
- 2 — the bytes of the counter file, with the valid current record in place.

Documented outcomes: a value, or a :class:`~tinyward.trust.errors.StorageError`
(``RecordMissing``, ``RecordTampered``, ``RecordRolledBack``, ``CountersTampered``). A
value is also checked against what was sealed: the store must never return anything
else. Anything else is a crash.
"""

from __future__ import annotations

import os
import struct

from tests.fuzz.harness import instrumented, run, workdir

with instrumented(__name__):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from tinyward.trust.errors import StorageError
    from tinyward.trust.rot import FileRootOfTrust
    from tinyward.trust.storage import ProtectedStorage

COMMITTED = 3
VALUES = {version: f"value {version}".encode() * version for version in range(1, COMMITTED + 1)}
_DIR = workdir("storage")
_ROOT = FileRootOfTrust.create(_DIR / "root.key", _DIR / "counters")
STORE = ProtectedStorage(_DIR / "records", _ROOT)
OLD_RECORDS: dict[int, bytes] = {}
for _version, _value in VALUES.items():
    STORE.write("rec", _value)
    OLD_RECORDS[_version] = (_DIR / "records" / "rec.rec").read_bytes()
STORE.write("other", b"another record")
OTHER_RECORD = (_DIR / "records" / "other.rec").read_bytes()
COUNTERS = (_DIR / "counters").read_bytes()
RECORD_PATH = _DIR / "records" / "rec.rec"
# The record format (storage module docstring), rebuilt here so that mode 1 can seal.
_AEAD = AESGCM(_ROOT.derive_key("protected-storage/aes-256-gcm"))


def seal(name: str, version: int, value: bytes) -> bytes:
    nonce = os.urandom(12)
    aad = b"tinyward-protected-storage/1\x00" + name.encode() + struct.pack(">Q", version)
    return b"TWPS1" + struct.pack(">Q", version) + nonce + _AEAD.encrypt(nonce, value, aad)


def TestOneInput(data: bytes) -> None:  # the name atheris and OSS-Fuzz use
    if not data:
        return
    mode, body = data[0] % 3, data[1:]
    (_DIR / "counters").write_bytes(COUNTERS)
    expected: bytes | None = None  # what a successful read may return; None: anything sealed
    if mode == 0:
        RECORD_PATH.write_bytes(body)
    elif mode == 1:
        if len(body) < 2:
            return
        version = 2**64 - 1 if body[0] == 255 else COMMITTED - 2 + body[0] % 5
        name = "rec" if body[1] % 2 == 0 else "other"
        expected = body[2:]
        RECORD_PATH.write_bytes(seal(name, version, expected))
    else:
        RECORD_PATH.write_bytes(OLD_RECORDS[COMMITTED])
        (_DIR / "counters").write_bytes(body)
    try:
        value = STORE.read("rec")
    except StorageError:
        return
    if expected is not None:
        assert value == expected, "the store returned something other than what was sealed"
    else:
        assert value in VALUES.values(), "the store returned a value nobody wrote"


def seeds() -> list[bytes]:
    return [
        b"\x00" + OLD_RECORDS[COMMITTED],
        b"\x00" + OLD_RECORDS[COMMITTED - 1],  # a rollback
        b"\x00" + OTHER_RECORD,  # a swap
        b"\x01\x02\x00" + b"same version",
        b"\x01\x03\x00" + b"one ahead: the counter is repaired",
        b"\x01\x01\x00" + b"one behind",
        b"\x01\x02\x01" + b"sealed for another name",
        b"\x02" + COUNTERS,
    ]


if __name__ == "__main__":
    run(TestOneInput, seeds)
