"""The trusted core is pure (issue 11): bytes and an explicit ``now`` in, no disk, no clock.

Protected storage and the keystore run here over an in-memory folder and root of trust
with every file-opening call and the clock made to fail, so any direct I/O or clock read
left in the core fails these tests. The disk lives in the adapters (``trust/_files.py``,
``FileRootOfTrust``).
"""

from __future__ import annotations

import builtins
import hmac
import io
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyward.trust.errors import CountersTampered, RecordRolledBack, RecordTampered
from tinyward.trust.keystore import Keystore, KeyUsage
from tinyward.trust.lockout import LockedOut, LockoutPolicy
from tinyward.trust.readout import ReadoutGate, WrongCode
from tinyward.trust.rot import advanced, decode_counters, derive, encode_counters
from tinyward.trust.storage import ProtectedStorage

NOW = 1_700_000_000.0


class MemoryFolder:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def read(self, name: str, max_bytes: int) -> bytes | None:
        data = self.files.get(name)
        if data is not None and len(data) > max_bytes:
            raise ValueError("too large")
        return data

    def write(self, name: str, data: bytes) -> None:
        self.files[name] = data

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.files if n.startswith(prefix))

    @contextmanager
    def lock(self, unsafe_no_lock: bool = False) -> Iterator[None]:
        yield


class MemoryRoot:
    description = "memory"
    hardware_backed = False

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def derive_key(self, label: str, length: int = 32) -> bytes:
        return derive(b"\x01" * 32, label, length)

    def read_counter(self, name: str) -> int:
        return self.counters.get(name, 0)

    def advance_counter(self, name: str, value: int) -> None:
        self.counters = advanced(self.counters, name, value) or self.counters


@contextmanager
def no_io(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record (not raise: pytest itself needs the disk) every file or clock call in the block."""
    calls: list[str] = []
    for target, name in [(builtins, "open"), (io, "open"), (os, "open"), (os, "stat"),
                         (os, "replace"), (os, "listdir"), (os, "scandir"), (time, "time")]:
        real = getattr(target, name)

        def record(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            caller = sys._getframe(1)
            calls.append(f"{_name} from {caller.f_code.co_filename}:{caller.f_lineno}")
            return _real(*args, **kwargs)

        monkeypatch.setattr(target, name, record)
    yield calls
    monkeypatch.undo()


def test_storage_core_needs_no_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    folder, root = MemoryFolder(), MemoryRoot()
    with no_io(monkeypatch) as calls:
        exercise_storage(ProtectedStorage(folder, root), folder)
    assert calls == []


def exercise_storage(store: ProtectedStorage, folder: MemoryFolder) -> None:
    store.write("alpha", b"old")
    old = folder.files["alpha"]
    assert store.write("alpha", b"new") == 2
    assert store.read("alpha") == b"new"
    folder.files["alpha"] = old
    with pytest.raises(RecordRolledBack):
        store.read("alpha")
    folder.files["alpha"] = old[:-1] + bytes([old[-1] ^ 1])
    with pytest.raises(RecordTampered):
        store.read("alpha")


def test_keystore_core_needs_no_disk_or_clock(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = MemoryRoot()
    with no_io(monkeypatch) as calls:
        keystore = Keystore(ProtectedStorage(MemoryFolder(), root), root, tmp_path / "keys")
        handle = keystore.generate("report", KeyUsage.SIGN_REPORT, now=NOW)
        signature = keystore.sign(handle, KeyUsage.SIGN_REPORT, b"message")
        names = keystore.names()
        sealed = keystore.unseal(keystore.seal(b"x", "label"), "label")
    assert calls == []
    assert (len(signature), names, sealed) == (64, ["report"], b"x")
    assert not (tmp_path / "keys").exists()


def test_readout_gate_needs_no_disk_and_only_its_given_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = MemoryRoot()
    gate = ReadoutGate(ProtectedStorage(MemoryFolder(), root), "dev", lambda: NOW)
    with no_io(monkeypatch) as calls:
        gate.enrol_pin("482913", LockoutPolicy(free_attempts=1, base_delay=60, max_delay=60))
        with pytest.raises(WrongCode):
            gate.attempt("000000")
        with pytest.raises(LockedOut):
            gate.attempt("482913")
    assert calls == []


def test_counter_file_codec_is_pure() -> None:
    key = derive(b"\x02" * 32, "counters-mac")
    data = encode_counters(key, {"storage/a": 3})
    assert decode_counters(key, data) == {"storage/a": 3}
    with pytest.raises(ValueError, match="cannot go back"):
        advanced({"storage/a": 3}, "storage/a", 2)
    assert advanced({"storage/a": 3}, "storage/a", 3) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_counter_file_decoder_only_documented_errors(body: bytes, valid_mac: bool) -> None:
    """Any bytes, even with a valid MAC (a bug that writes nonsense): a dict or CountersTampered."""
    key = derive(b"\x03" * 32, "counters-mac")
    mac = hmac.new(key, body, "sha256").digest() if valid_mac else bytes(32)
    try:
        counters = decode_counters(key, b"TWCTR1" + body + mac)
    except CountersTampered:
        return
    assert all(isinstance(v, int) and v >= 0 for v in counters.values())
