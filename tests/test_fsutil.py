"""atomic_write: the target holds the old or the new bytes, with the requested mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tinyward import _fsutil
from tinyward._fsutil import atomic_write, make_private_directory


def test_atomic_write_creates_file_with_mode_0600_despite_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        atomic_write(tmp_path / "secret", b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "secret").read_bytes() == b"data"
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600


def test_atomic_write_replaces_and_applies_mode(tmp_path: Path) -> None:
    target = tmp_path / "file"
    atomic_write(target, b"old")
    atomic_write(target, b"new", mode=0o644)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_atomic_write_failure_keeps_old_content_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file"
    atomic_write(target, b"old")

    def crash(*_: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(_fsutil.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_atomic_write_into_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "file", b"x")


def test_make_private_directory_mode_and_refuses_existing(tmp_path: Path) -> None:
    make_private_directory(tmp_path / "d")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700
    with pytest.raises(FileExistsError):
        make_private_directory(tmp_path / "d")


def test_create_exclusive_makes_a_0600_file_once_and_syncs_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real = _fsutil.fsync_directory
    monkeypatch.setattr(_fsutil, "fsync_directory", lambda d: (synced.append(Path(d)), real(d)))
    old = os.umask(0)
    try:
        _fsutil.create_exclusive(tmp_path / "root.key", b"k" * 32)
    finally:
        os.umask(old)
    assert (tmp_path / "root.key").read_bytes() == b"k" * 32
    assert stat.S_IMODE((tmp_path / "root.key").stat().st_mode) == 0o600
    # The directory entry is on disk too: a crash cannot lose a key already in use.
    assert synced == [tmp_path]
    with pytest.raises(FileExistsError):
        _fsutil.create_exclusive(tmp_path / "root.key", b"other")
    assert (tmp_path / "root.key").read_bytes() == b"k" * 32  # never replaced


def test_create_exclusive_leaves_nothing_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(_fsutil.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        _fsutil.create_exclusive(tmp_path / "root.key", b"k" * 32)
    assert not (tmp_path / "root.key").exists()  # a retry can make it
