"""Attacks on the app archive's *headers*: sizes and counts that tarfile trusts.

Python's tarfile reads an extended header (pax ``x``/``g``, GNU long name ``L``/``K``)
whole into memory at the size its tar header declares, follows a chain of them by
recursion, and reads GNU sparse maps to their end before anything else sees the member.
The entry and byte limits (`ArchiveLimits`) are checked only on the members tarfile
returns, so each attack below got past them: a memory bomb (a gzip of zeros is 1000:1),
a RecursionError no caller expected (the agent stuck in ``staged``), or memory growing
with a sparse map. Each is now refused as ``bad-archive`` while the header is read.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from tinyward.trust.device import Device
from tinyward.update.agent import UpdateAgent
from tinyward.update.archive import ArchiveLimits, archive_measurement, extract_app
from tinyward.update.errors import BadArchive
from tinyward.update.health import HealthCheck, TrialConfig
from tinyward.update.slots import Slots

from .helpers import APPS, PRODUCT, meta, tuf_info

BLOCK = 512
#: peak Python allocations allowed while an attack archive is refused
MEMORY_BOUND = 4 << 20


def _header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def _manifest_member() -> bytes:
    data = (APPS / "good" / "sensor.toml").read_bytes()
    return _header("sensor.toml", tarfile.REGTYPE, len(data)) + _padded(data)


def _end() -> bytes:
    return b"\0" * (2 * BLOCK)


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return f"{n}".encode() + body


def _write(path: Path, data: bytes, *, gz: bool) -> Path:
    path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    return path


def _refused_in_bounded_memory(archive: Path, tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(BadArchive):
            extract_app(archive, tmp_path / "out", ArchiveLimits())
        with pytest.raises(BadArchive):
            archive_measurement(archive, ArchiveLimits())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"{peak} bytes allocated while refusing the archive"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME,
                                  tarfile.GNUTYPE_LONGLINK])
def test_extended_header_declaring_a_petabyte_is_refused_not_allocated(
        tmp_path: Path, kind: bytes) -> None:
    # 1 PiB: tarfile's read() asks for it at once (MemoryError, an exception nobody caught)
    data = _header("././@LongLink", kind, 1 << 50) + _manifest_member() + _end()
    _refused_in_bounded_memory(_write(tmp_path / "t.tar", data, gz=False), tmp_path)


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_gzipped_extended_header_bomb_is_refused_in_bounded_memory(tmp_path: Path,
                                                                   kind: bytes) -> None:
    # 64 MiB of zeros in one extended header: about 250 KiB once gzipped, and before the
    # fix the archive was *accepted* after tarfile had held all 64 MiB at once
    size = 64 << 20
    data = (_header("././@PaxHeader", kind, size) + b"\0" * size + _manifest_member()
            + _end())
    _refused_in_bounded_memory(_write(tmp_path / "t.tar.gz", data, gz=True), tmp_path)


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME])
def test_chain_of_extended_headers_is_refused_not_a_recursion_error(tmp_path: Path,
                                                                   kind: bytes) -> None:
    # tarfile follows each extended header to the next by recursion: 2000 of them (2 MB)
    # raised RecursionError, which no caller caught
    record = _padded(_pax_record("comment", "x") if kind != tarfile.GNUTYPE_LONGNAME
                     else b"sensor.toml\0")
    one = _header("././@PaxHeader", kind, len(record.rstrip(b"\0")) or 1) + record
    data = one * 2000 + _manifest_member() + _end()
    _refused_in_bounded_memory(_write(tmp_path / "t.tar", data, gz=False), tmp_path)


def _old_gnu_sparse(blocks: int) -> bytes:
    """A GNU sparse header ('S') whose map goes on for ``blocks`` extension blocks."""
    head = bytearray(_header("sparse.bin", tarfile.GNUTYPE_SPARSE, 0))
    head[482] = 1  # isextended
    head[148:156] = b"        "
    head[148:156] = b"%06o\0 " % sum(head)
    entry = b"%011o\0" % 1 + b"%011o\0" % 1  # offset 1, numbytes 1
    ext = entry * 21 + b"\1" + b"\0" * 7
    last = entry * 21 + b"\0" * 8
    return bytes(head) + ext * (blocks - 1) + last


def _pax_sparse_10(numbers: int) -> bytes:
    """A pax header asking for a GNU sparse 1.0 map, and a map of ``numbers`` numbers."""
    records = (_pax_record("GNU.sparse.major", "1") + _pax_record("GNU.sparse.minor", "0")
               + _pax_record("GNU.sparse.name", "sparse.bin"))
    sparse_map = f"{numbers // 2}\n".encode() + b"1\n" * numbers
    return (_header("././@PaxHeader", tarfile.XHDTYPE, len(records)) + _padded(records)
            + _header("sparse.bin", tarfile.REGTYPE, len(_padded(sparse_map)))
            + _padded(sparse_map))


@pytest.mark.parametrize("variant", ["gnu_old_extension_chain", "pax_gnu_sparse_1_0"])
def test_sparse_map_bomb_is_refused_before_the_map_is_read(tmp_path: Path,
                                                          variant: str) -> None:
    # sparse files are refused anyway: but tarfile built the whole map (millions of
    # tuples from a small gzip) before the check saw the member
    body = _old_gnu_sparse(10_000) if variant.startswith("gnu") else _pax_sparse_10(400_000)
    data = _manifest_member() + body + _end()
    _refused_in_bounded_memory(_write(tmp_path / "t.tar.gz", data, gz=True), tmp_path)


def test_pax_negative_size_is_refused(tmp_path: Path) -> None:
    # a negative size would lower the running total that the 128 MiB limit checks
    records = _pax_record("size", "-1000000")
    data = (_manifest_member() + _header("././@PaxHeader", tarfile.XHDTYPE, len(records))
            + _padded(records) + _header("big.bin", tarfile.REGTYPE, 0) + _end())
    with pytest.raises(BadArchive):
        extract_app(_write(tmp_path / "t.tar", data, gz=False), tmp_path / "out",
                    ArchiveLimits())


def test_ordinary_pax_and_gnu_long_names_still_extract(tmp_path: Path) -> None:
    # the limits leave real archives alone: a 200-character name each way
    long_name = "d/" * 10 + "x" * 150 + ".py"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        path = tmp_path / f"t{fmt}.tar"
        with tarfile.open(path, "w", format=fmt) as tar:
            data = (APPS / "good" / "sensor.toml").read_bytes()
            for name, body in (("sensor.toml", data), (long_name, b"print(1)\n")):
                info = tarfile.TarInfo(name)
                info.size = len(body)
                info.pax_headers = {"comment": "é" * 50} if fmt == tarfile.PAX_FORMAT else {}
                tar.addfile(info, io.BytesIO(body))
        out = tmp_path / f"out{fmt}"
        extract_app(path, out, ArchiveLimits())
        assert (out / long_name).read_bytes() == b"print(1)\n"


def test_header_chain_bomb_through_the_agent_is_rejected_not_stuck(tmp_path: Path) -> None:
    # before: the RecursionError escaped apply() and left the device in "staged" (every
    # later update "busy" until a restart)
    device = Device.init(tmp_path / "dev")
    agent = UpdateAgent(device.storage, Slots(tmp_path / "slots"), product_class=PRODUCT,
                        device_id=device.device_id,
                        health=HealthCheck(TrialConfig(run_app=False)))
    record = _pax_record("comment", "x")
    one = _header("././@PaxHeader", tarfile.XHDTYPE, len(record)) + _padded(record)
    archive = _write(tmp_path / "t.tar", one * 2000 + _manifest_member() + _end(), gz=False)
    length, hashes = tuf_info(archive)
    outcome = agent.apply("app", archive, meta("app", "1.0.0"), length, hashes)
    assert (outcome.state, outcome.why) == ("rejected", "bad-archive")
    assert agent.status()["state"] == "rejected"
