"""A/B slots: archives refused before extraction, slots checked again before a switch.

Every refusal leaves the running slot untouched (checked byte for byte)."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyward.trust.measurement import measurement_digest
from tinyward.update.archive import ArchiveLimits, archive_measurement, extract_app
from tinyward.update.errors import BadArchive, SlotCorrupt, TooLong
from tinyward.update.slots import ComponentSlots, SlotInfo, Slots, check_file

from .helpers import APPS, app_tar, file_member, raw_tar, tuf_info, version


def _manifest() -> tuple[tarfile.TarInfo, bytes]:
    return file_member("sensor.toml", (APPS / "good" / "sensor.toml").read_bytes())


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _device(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


HOSTILE = {
    "dotdot": [_manifest(), file_member("../escape.py")],
    "dotdot_inside": [_manifest(), file_member("lib/../../escape.py")],
    "absolute": [_manifest(), file_member("/tmp/tinyward-escape.py")],
    "symlink": [_manifest(), _link("model.json", "/etc/passwd", tarfile.SYMTYPE)],
    "hardlink": [_manifest(), _link("model.json", "/etc/passwd", tarfile.LNKTYPE)],
    "char_device": [_manifest(), _device("tty", tarfile.CHRTYPE)],
    "block_device": [_manifest(), _device("sda", tarfile.BLKTYPE)],
    "fifo": [_manifest(), _device("pipe", tarfile.FIFOTYPE)],
    "duplicate": [_manifest(), file_member("a.py"), file_member("a.py", b"again")],
    "file_then_under_it": [_manifest(), file_member("lib"), file_member("lib/x.py")],
    "backslash": [_manifest(), file_member("..\\escape.py")],
    "no_manifest": [file_member("app.py")],
    "manifest_in_subfolder": [file_member("sub/sensor.toml")],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_archive_is_refused_before_anything_is_extracted(tmp_path: Path,
                                                                  name: str) -> None:
    archive = raw_tar(tmp_path / "t.tar", HOSTILE[name])
    with pytest.raises(BadArchive):
        extract_app(archive, tmp_path / "out", ArchiveLimits())
    assert not (tmp_path / "out").exists()
    assert not Path("/tmp/tinyward-escape.py").exists()
    assert not (tmp_path / "escape.py").exists()


@pytest.mark.parametrize("limit,members", [
    (ArchiveLimits(max_entries=3), [_manifest(), *(file_member(f"f{i}") for i in range(3))]),
    (ArchiveLimits(max_file_bytes=10), [_manifest(), file_member("big", b"x" * 11)]),
    (ArchiveLimits(max_total_bytes=2000), [_manifest(), file_member("a", b"x" * 1500),
                                          file_member("b", b"x" * 1500)]),
    (ArchiveLimits(max_depth=3), [_manifest(), file_member("a/b/c/d")]),
    (ArchiveLimits(max_path_chars=20), [_manifest(), file_member("a" * 21)]),
])
def test_archive_over_a_limit_is_refused(tmp_path: Path, limit: ArchiveLimits,
                                         members: list) -> None:
    archive = raw_tar(tmp_path / "t.tar", members)
    with pytest.raises(BadArchive):
        extract_app(archive, tmp_path / "out", limit)
    assert not (tmp_path / "out").exists()


def test_not_a_tar_is_a_bad_archive(tmp_path: Path) -> None:
    (tmp_path / "t.tar").write_bytes(b"MZ not a tar at all" * 100)
    with pytest.raises(BadArchive):
        extract_app(tmp_path / "t.tar", tmp_path / "out", ArchiveLimits())


def test_good_archive_extracts_exactly_its_files_with_safe_modes(tmp_path: Path) -> None:
    archive = app_tar(APPS / "good", tmp_path / "good.tar", extra={"./lib/util.py": b"x = 1\n"})
    extract_app(archive, tmp_path / "out", ArchiveLimits())
    names = sorted(p.relative_to(tmp_path / "out").as_posix()
                   for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert names == ["good_app.py", "lib/util.py", "model.json", "sensor.toml"]
    assert all(p.stat().st_mode & 0o777 in (0o644, 0o755) for p in (tmp_path / "out").rglob("*"))
    assert measurement_digest([tmp_path / "out"]) == archive_measurement(archive, ArchiveLimits())


# ---- slots -----------------------------------------------------------------------------


def _installed(tmp_path: Path) -> tuple[Slots, ComponentSlots, bytes]:
    """A slots folder whose slot a runs app 1.0.0 (written and verified as an update)."""
    slots = Slots(tmp_path / "slots")
    archive = app_tar(APPS / "good", tmp_path / "v1.tar")
    length, hashes = tuf_info(archive)
    slot = slots.write("app", ComponentSlots(), archive, length)
    info = slots.verify("app", slot, version("1.0.0"), length, hashes)
    running = ComponentSlots(slot, {slot: info}).confirmed()
    return slots, running, _tree_bytes(slots.content("app", slot))


def _tree_bytes(folder: Path) -> bytes:
    return b"".join(p.relative_to(folder).as_posix().encode() + p.read_bytes()
                    for p in sorted(folder.rglob("*")) if p.is_file())


def test_write_goes_to_the_inactive_slot_only(tmp_path: Path) -> None:
    slots, running, before = _installed(tmp_path)
    archive = app_tar(APPS / "violator", tmp_path / "v2.tar")
    slot = slots.write("app", running, archive, tuf_info(archive)[0])
    assert slot != running.active
    assert _tree_bytes(slots.content("app", running.active)) == before


def test_tar_with_dotdot_path_is_refused_and_running_version_untouched(tmp_path: Path) -> None:
    slots, running, before = _installed(tmp_path)
    archive = raw_tar(tmp_path / "evil.tar", HOSTILE["dotdot"])
    with pytest.raises(BadArchive):
        slots.write("app", running, archive, tuf_info(archive)[0])
    assert _tree_bytes(slots.content("app", running.active)) == before
    assert not (slots.root / "app" / "escape.py").exists()


def test_target_longer_than_its_metadata_is_refused(tmp_path: Path) -> None:
    slots, running, before = _installed(tmp_path)
    archive = app_tar(APPS / "good", tmp_path / "v2.tar")
    with pytest.raises(TooLong):
        slots.write("app", running, archive, tuf_info(archive)[0] - 1)
    with pytest.raises(TooLong):
        slots.write("app", running, archive, tuf_info(archive)[0] + 1)
    assert _tree_bytes(slots.content("app", running.active)) == before


def test_slot_corrupted_after_download_fails_verification(tmp_path: Path) -> None:
    slots, running, _ = _installed(tmp_path)
    archive = app_tar(APPS / "good", tmp_path / "v2.tar", extra={"v2.txt": b"2"})
    length, hashes = tuf_info(archive)
    slot = slots.write("app", running, archive, length)
    (slots.content("app", slot) / "good_app.py").write_text("import os; os.system('x')\n")
    with pytest.raises(SlotCorrupt, match="not the archive"):
        slots.verify("app", slot, version("2.0.0"), length, hashes)


def test_file_added_to_extracted_slot_fails_verification(tmp_path: Path) -> None:
    slots, running, _ = _installed(tmp_path)
    archive = app_tar(APPS / "good", tmp_path / "v2.tar", extra={"v2.txt": b"2"})
    length, hashes = tuf_info(archive)
    slot = slots.write("app", running, archive, length)
    (slots.content("app", slot) / "sitecustomize.py").write_text("evil = 1\n")
    with pytest.raises(SlotCorrupt):
        slots.verify("app", slot, version("2.0.0"), length, hashes)


def test_stored_target_flipped_byte_fails_verification(tmp_path: Path) -> None:
    slots = Slots(tmp_path / "slots")
    target = tmp_path / "model.bin"
    target.write_bytes(bytes(range(256)) * 10)
    length, hashes = tuf_info(target)
    slot = slots.write("model", ComponentSlots(), target, length)
    stored = slots.content("model", slot)
    data = bytearray(stored.read_bytes())
    data[100] ^= 1
    stored.write_bytes(bytes(data))
    with pytest.raises(SlotCorrupt, match="sha"):
        slots.verify("model", slot, version("1.0.0"), length, hashes)


def test_hashes_fail_closed(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"data")
    digest = hashlib.sha256(b"data").hexdigest()
    with pytest.raises(SlotCorrupt, match="no sha256"):
        check_file(target, 4, {"sha512": hashlib.sha512(b"data").hexdigest()})
    with pytest.raises(SlotCorrupt, match="unknown hash"):
        check_file(target, 4, {"sha256": digest, "md6": "00"})
    with pytest.raises(SlotCorrupt, match="sha512"):
        check_file(target, 4, {"sha256": digest, "sha512": "00" * 64})
    assert check_file(target, 4, {"sha256": digest.upper()}) == digest


def test_active_slot_is_never_emptied() -> None:
    running = ComponentSlots("a", {"a": SlotInfo(version("1.0.0"), "00", "00")})
    with pytest.raises(Exception, match="active"):
        running.without("a")
    assert running.reverted().active is None  # nothing before it: nothing to revert to


def test_control_a_naive_extractor_would_escape_with_the_dotdot_archive(tmp_path: Path) -> None:
    # The attack is real: Python's own extractall (3.11 without a filter) writes outside.
    archive = raw_tar(tmp_path / "t.tar", HOSTILE["dotdot"])
    (tmp_path / "naive" / "out").mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "naive" / "out")  # noqa: S202 (the point of the test)
    assert (tmp_path / "naive" / "escape.py").exists()


def test_tree_measurement_equals_the_directory_measurement_and_checks_sizes(
        tmp_path: Path) -> None:
    import io

    from tinyward.trust.errors import MeasurementError
    from tinyward.trust.measurement import measurement_digest_of_tree

    (tmp_path / "t" / "sub").mkdir(parents=True)
    files = {"b.txt": b"bee", "sub/a.bin": bytes(300), "a": b""}
    for name, data in files.items():
        (tmp_path / "t" / name).write_bytes(data)
    listed = [(n, len(d), lambda d=d: io.BytesIO(d)) for n, d in files.items()]
    assert measurement_digest_of_tree(listed) == measurement_digest([tmp_path / "t"])
    with pytest.raises(MeasurementError, match="not 4 bytes"):
        measurement_digest_of_tree([("x", 4, lambda: io.BytesIO(b"abc"))])
    with pytest.raises(MeasurementError, match="not 2 bytes"):
        measurement_digest_of_tree([("x", 2, lambda: io.BytesIO(b"abc"))])
    with pytest.raises(MeasurementError, match="twice"):
        measurement_digest_of_tree([listed[0], listed[0]])
    with pytest.raises(MeasurementError, match="nothing"):
        measurement_digest_of_tree([])


def test_gzip_archive_is_accepted(tmp_path: Path) -> None:
    import gzip

    plain = app_tar(APPS / "good", tmp_path / "good.tar")
    packed = tmp_path / "good.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    extract_app(packed, tmp_path / "out", ArchiveLimits())
    assert (tmp_path / "out" / "sensor.toml").is_file()


_PARTS = st.sampled_from(["a", "b.py", "..", ".", "", "sensor.toml", "c\\d", "/", "é"])
_KINDS = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                          tarfile.FIFOTYPE])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.lists(_PARTS, min_size=1, max_size=4), _KINDS,
                          st.binary(max_size=20)), min_size=1, max_size=6))
def test_fuzz_archive_extracts_inside_its_folder_or_is_refused(tmp_path: Path,
                                                               members: list) -> None:
    case = tmp_path / f"case-{os.urandom(4).hex()}"
    case.mkdir()
    built = []
    for parts, kind, data in [(["sensor.toml"], tarfile.REGTYPE, b"x"), *members]:
        info = tarfile.TarInfo("/".join(parts))
        info.type = kind
        info.linkname = "../../outside" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
        built.append((info, data if kind == tarfile.REGTYPE else None))
    archive = raw_tar(case / "t.tar", built)
    out = case / "box" / "out"
    out.parent.mkdir()
    try:
        extract_app(archive, out, ArchiveLimits())
    except BadArchive:
        assert not out.exists()
    else:
        for path in out.rglob("*"):
            assert not path.is_symlink() and (path.is_file() or path.is_dir())
            assert path.resolve().is_relative_to(out.resolve())
    assert sorted(p.name for p in case.iterdir()) == ["box", "t.tar"]
    assert [p.name for p in (case / "box").iterdir()] in ([], ["out"])


@pytest.mark.parametrize("cut", [10, 200, -30])
def test_truncated_gzip_archive_is_a_bad_archive_and_leaves_nothing(tmp_path: Path,
                                                                   cut: int) -> None:
    # found by tests/fuzz/fuzz_archive.py: EOFError escaped from a gzip cut short
    import gzip

    plain = app_tar(APPS / "good", tmp_path / "good.tar")
    packed = gzip.compress(plain.read_bytes())
    (tmp_path / "cut.tar.gz").write_bytes(packed[:cut])
    with pytest.raises(BadArchive):
        extract_app(tmp_path / "cut.tar.gz", tmp_path / "out", ArchiveLimits())
    assert not (tmp_path / "out").exists()


def test_bzip2_archive_is_refused(tmp_path: Path) -> None:
    import bz2

    plain = app_tar(APPS / "good", tmp_path / "good.tar")
    (tmp_path / "t.tar.bz2").write_bytes(bz2.compress(plain.read_bytes()))
    with pytest.raises(BadArchive):
        extract_app(tmp_path / "t.tar.bz2", tmp_path / "out", ArchiveLimits())
