"""Measure software for the attestation token's Software Components claim.

A measurement is a SHA-256 that anyone can recompute from the same files, wherever they
sit on disk. The digest covers a framed, sorted listing, so that no two different file
trees give the same byte stream (``docs/attestation.md`` describes it for third parties):

    "tinyward-measure/1\\0"
    for every file, sorted by (argument index, relative path as UTF-8 bytes):
        u32 argument index || u32 len(path) || path || u64 len(content) || content

(integers big-endian). A file argument's relative path is its name; a directory
argument's files are named by their path inside it, with ``/`` separators. Symbolic links
and special files inside a directory are refused rather than followed, so a measurement
never depends on something outside the tree. Empty directories add nothing.

This module reads files (it is the I/O edge of attestation); the codec does not.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from tinyward.trust.errors import MeasurementError

if TYPE_CHECKING:
    from tinyward.trust.attestation import SoftwareComponent

#: RFC 9783 §4.4.1.5: the hash name from the IANA Named Information Hash Algorithm registry.
MEASUREMENT_DESC_SHA256 = "sha-256"
#: Signer ID for software that no known key signed (e.g. tinyward installed from a wheel):
#: the claim is mandatory and must be a 32-byte hash, so all zeroes says "no signer".
UNSIGNED_SIGNER_ID = bytes(32)
_DOMAIN = b"tinyward-measure/1\x00"
_CHUNK = 64 * 1024


def measurement_digest(
    paths: Sequence[Path], *, include: Callable[[str], bool] | None = None
) -> bytes:
    """SHA-256 over the framed, sorted listing of ``paths`` (see the module doc).

    ``include`` filters files found *inside directories* by relative path. Raises
    :class:`MeasurementError` if a path is missing, unreadable, a symlink or special
    file inside a directory, changes size while being read, or if nothing was measured.
    """
    entries: list[tuple[int, bytes, Path]] = []
    for index, raw_path in enumerate(paths):
        path = Path(raw_path)
        try:
            info = path.stat()
        except OSError as error:
            raise MeasurementError(f"cannot measure {path}: {error.strerror}") from None
        if stat.S_ISREG(info.st_mode):
            entries.append((index, _utf8(path.name, path), path))
        elif stat.S_ISDIR(info.st_mode):
            entries.extend((index, rel, file) for rel, file in _walk(path, include))
        else:
            raise MeasurementError(f"cannot measure {path}: not a regular file or directory")
    if not entries:
        raise MeasurementError("nothing to measure: no files under the given paths")
    digest = hashlib.sha256(_DOMAIN)
    for index, rel, file in sorted(entries, key=lambda e: (e[0], e[1])):
        digest.update(struct.pack(">II", index, len(rel)) + rel)
        _hash_file(digest, file)
    return digest.digest()


def measurement_digest_of_tree(files: Iterable[tuple[str, int, Callable[[], BinaryIO]]]) -> bytes:
    """What :func:`measurement_digest` gives for one directory holding exactly ``files``,
    computed without that directory: ``(relative path, size, opener)`` each, the opener
    returning a stream of the content (e.g. a member of an archive). Lets a verifier
    check that a tree extracted on disk is exactly the archive it came from.

    Raises :class:`MeasurementError` if a stream is shorter or longer than its size, a
    path is listed twice, or nothing is listed.
    """
    entries = sorted(((_utf8(rel, Path(rel)), size, opener) for rel, size, opener in files),
                     key=lambda e: e[0])
    if not entries:
        raise MeasurementError("nothing to measure: no files listed")
    if len({rel for rel, _, _ in entries}) != len(entries):
        raise MeasurementError("a file is listed twice")
    digest = hashlib.sha256(_DOMAIN)
    for rel, size, opener in entries:
        digest.update(struct.pack(">II", 0, len(rel)) + rel + struct.pack(">Q", size))
        remaining = size
        with opener() as stream:
            while remaining > 0:
                chunk = stream.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                digest.update(chunk)
                remaining -= len(chunk)
            if remaining or stream.read(1):
                raise MeasurementError(f"{rel.decode()} is not {size} bytes long")
    return digest.digest()


def _walk(root: Path, include: Callable[[str], bool] | None) -> list[tuple[bytes, Path]]:
    found: list[tuple[bytes, Path]] = []

    def refuse(error: OSError) -> None:
        raise MeasurementError(f"cannot measure {root}: {error}")

    for directory, dirnames, filenames in os.walk(root, onerror=refuse, followlinks=False):
        base = Path(directory)
        for name in dirnames:
            if (base / name).is_symlink():
                raise MeasurementError(f"refusing to follow the symbolic link {base / name}")
        for name in filenames:
            file = base / name
            rel = file.relative_to(root).as_posix()
            if include is not None and not include(rel):
                continue
            if not stat.S_ISREG(file.lstat().st_mode):
                raise MeasurementError(f"refusing to measure {file}: not a regular file")
            found.append((_utf8(rel, file), file))
    return found


def _utf8(name: str, path: Path) -> bytes:
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError:
        raise MeasurementError(f"cannot measure {path!r}: its name is not valid UTF-8") from None


def _hash_file(digest: hashlib._Hash, file: Path) -> None:
    try:
        with open(file, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            digest.update(struct.pack(">Q", size))
            remaining = size
            while remaining > 0:
                chunk = handle.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                digest.update(chunk)
                remaining -= len(chunk)
            if remaining or handle.read(1):
                raise MeasurementError(f"{file} changed size while it was being measured")
    except OSError as error:
        raise MeasurementError(f"cannot read {file}: {error.strerror}") from None


def measure_files(
    paths: Sequence[Path],
    measurement_type: str,
    signer_id: bytes,
    version: str | None = None,
) -> SoftwareComponent:
    """Measure files and directories into one software component (SHA-256).

    ``measurement_type`` is the component's role (RFC 9783 §4.4.1.1: ``"PRoT"``,
    ``"App"``, ``"App_CONFIG"`` …); ``signer_id`` a 32, 48 or 64-byte hash of the signer's
    key (:data:`UNSIGNED_SIGNER_ID` when none). Raises :class:`MeasurementError`.
    """
    from tinyward.trust.attestation import SoftwareComponent

    if not isinstance(signer_id, bytes) or len(signer_id) not in (32, 48, 64):
        raise MeasurementError("signer_id must be a 32, 48 or 64-byte hash")
    if not paths:
        raise MeasurementError("nothing to measure: no paths given")
    return SoftwareComponent(
        measurement_value=measurement_digest(paths),
        signer_id=signer_id,
        measurement_type=measurement_type,
        version=version,
        measurement_desc=MEASUREMENT_DESC_SHA256,
    )


def tinyward_package_dir() -> Path:
    """The directory of the installed ``tinyward`` package (what
    :func:`measure_tinyward_code` reads)."""
    import tinyward

    return Path(tinyward.__file__).resolve().parent


def measure_tinyward_code(signer_id: bytes = UNSIGNED_SIGNER_ID) -> SoftwareComponent:
    """Measure the installed tinyward package: every ``.py`` file under it, type ``"PRoT"``.

    tinyward is the device's trusted core, hence the PSA Root of Trust type. Compiled
    caches (``__pycache__``) and data files are left out so that the measurement depends
    only on the code. Raises :class:`MeasurementError`.
    """
    from tinyward import __version__
    from tinyward.trust.attestation import SoftwareComponent

    digest = measurement_digest(
        [tinyward_package_dir()],
        include=lambda rel: rel.endswith(".py") and "__pycache__" not in rel.split("/"),
    )
    if not isinstance(signer_id, bytes) or len(signer_id) not in (32, 48, 64):
        raise MeasurementError("signer_id must be a 32, 48 or 64-byte hash")
    return SoftwareComponent(
        measurement_value=digest,
        signer_id=signer_id,
        measurement_type="PRoT",
        version=__version__,
        measurement_desc=MEASUREMENT_DESC_SHA256,
    )
