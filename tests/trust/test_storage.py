"""Protected storage under fire: every kind of tampering is detected; crashes lose nothing."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyward.errors import Misuse
from tinyward.trust.errors import (
    CountersTampered,
    RecordMissing,
    RecordRolledBack,
    RecordTampered,
    RootOfTrustError,
)
from tinyward.trust.rot import FileRootOfTrust
from tinyward.trust.storage import ProtectedStorage


def make_store(tmp_path: Path) -> ProtectedStorage:
    tmp_path.mkdir(parents=True, exist_ok=True)
    root_key = tmp_path / "root.key"
    counters = tmp_path / "counters"
    rot = (
        FileRootOfTrust.create(root_key, counters)
        if not root_key.exists()
        else FileRootOfTrust(root_key, counters)
    )
    return ProtectedStorage(tmp_path / "records", rot)


def test_roundtrip_and_versions(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert store.write("alpha", b"one") == 1
    assert store.write("alpha", b"two") == 2
    assert store.read("alpha") == b"two"
    assert store.version("alpha") == 2
    assert not store.exists("beta")


def test_value_is_encrypted_at_rest(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.write("secret", b"very recognisable plaintext")
    raw = (tmp_path / "records" / "secret.rec").read_bytes()
    assert b"recognisable" not in raw


def test_flipped_byte_detected_everywhere(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.write("alpha", b"some value")
    path = tmp_path / "records" / "alpha.rec"
    good = path.read_bytes()
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x40
        path.write_bytes(bytes(bad))
        with pytest.raises((RecordTampered, RecordRolledBack)):
            store.read("alpha")
    path.write_bytes(good)
    assert store.read("alpha") == b"some value"


@pytest.mark.parametrize("keep", [0, 5, 20, 30])
def test_truncated_record_detected(tmp_path: Path, keep: int) -> None:
    store = make_store(tmp_path)
    store.write("alpha", b"some value")
    path = tmp_path / "records" / "alpha.rec"
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(RecordTampered):
        store.read("alpha")


def test_swapped_records_detected(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.write("alpha", b"A")
    store.write("beta", b"B")
    records = tmp_path / "records"
    shutil.copy(records / "beta.rec", records / "alpha.rec")
    with pytest.raises(RecordTampered, match="copied from another record"):
        store.read("alpha")


def test_rollback_of_one_record_detected(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.write("alpha", b"old")
    old_copy = (tmp_path / "records" / "alpha.rec").read_bytes()
    store.write("alpha", b"new")
    (tmp_path / "records" / "alpha.rec").write_bytes(old_copy)
    with pytest.raises(RecordRolledBack, match="older copy"):
        store.read("alpha")


def test_deleted_record_detected(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.write("alpha", b"x")
    (tmp_path / "records" / "alpha.rec").unlink()
    with pytest.raises(RecordMissing, match="deleted or rolled back"):
        store.read("alpha")


def test_record_from_another_device_detected(tmp_path: Path) -> None:
    one = make_store(tmp_path / "one")
    two = make_store(tmp_path / "two")
    one.write("alpha", b"device one")
    two.write("alpha", b"device two")
    shutil.copy(
        tmp_path / "one" / "records" / "alpha.rec", tmp_path / "two" / "records" / "alpha.rec"
    )
    with pytest.raises(RecordTampered):
        two.read("alpha")


def test_edited_counters_detected(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.write("alpha", b"x")
    counters = tmp_path / "counters"
    data = bytearray(counters.read_bytes())
    data[8] ^= 1
    counters.write_bytes(bytes(data))
    with pytest.raises(CountersTampered):
        store.read("alpha")


def test_world_readable_root_key_refused(tmp_path: Path) -> None:
    make_store(tmp_path)
    os.chmod(tmp_path / "root.key", 0o644)
    with pytest.raises(RootOfTrustError, match="readable by other users"):
        FileRootOfTrust(tmp_path / "root.key", tmp_path / "counters")


def test_root_key_never_replaced(tmp_path: Path) -> None:
    make_store(tmp_path)
    with pytest.raises(FileExistsError):
        FileRootOfTrust.create(tmp_path / "root.key", tmp_path / "counters")


@pytest.mark.parametrize("name", ["", "../escape", "UPPER", "a" * 65, "with space"])
def test_bad_record_names_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(Misuse):
        make_store(tmp_path).write(name, b"x")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_record_file_only_documented_errors(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    tmp_path = tmp_path_factory.mktemp("fuzz")
    store = make_store(tmp_path)
    store.write("alpha", b"value")
    (tmp_path / "records" / "alpha.rec").write_bytes(data)
    with pytest.raises((RecordTampered, RecordRolledBack)):
        store.read("alpha")


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tinyward.trust.rot import FileRootOfTrust
    from tinyward.trust.storage import ProtectedStorage
    base = Path(sys.argv[1]); start, end = int(sys.argv[2]), int(sys.argv[3])
    store = ProtectedStorage(base / "records",
                             FileRootOfTrust(base / "root.key", base / "counters"))
    for i in range(start, end):
        name = f"r{i % 5}"
        print(f"start {name} {i}", flush=True)
        store.write(name, f"value-{i}".encode() * (1 + i % 7))
        print(f"done {name} {i}", flush=True)
    """
)


def test_killed_writer_leaves_old_or_new_value(tmp_path: Path) -> None:
    """SIGKILL a writer at random points during 1,000 writes; every record stays readable."""
    rng = random.Random(1234)
    make_store(tmp_path)  # creates the root key
    committed: dict[str, bytes] = {}
    next_write, total, kills = 0, 1000, 0
    deadline = time.monotonic() + 240
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    while next_write < total and time.monotonic() < deadline:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), str(next_write), str(total)],
            stdout=subprocess.PIPE, env=env,
        )
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        kills += proc.returncode == -signal.SIGKILL
        pending: dict[str, bytes] = {}
        for line in out.decode().splitlines():
            kind, name, i = line.split()
            value = f"value-{i}".encode() * (1 + int(i) % 7)
            if kind == "start":
                pending[name] = value
            else:
                committed[name] = value
                pending.pop(name, None)
                next_write = int(i) + 1
        if pending:  # the write in flight when it died
            next_write = max(next_write, int(out.decode().split()[-1]) + 1)
        store = make_store(tmp_path)
        for name in {f"r{k}" for k in range(5)}:
            allowed = {v for v in (committed.get(name), pending.get(name)) if v is not None}
            if not allowed:
                continue
            value = store.read(name)  # must not raise
            assert value in allowed, f"{name} read {value[:20]!r}, not its old or new value"
            committed[name] = value
    assert next_write >= total, "the writer did not get through 1,000 writes in time"
    assert kills >= 3, "the writer was never killed mid-run; the test proved nothing"
