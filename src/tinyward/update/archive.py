"""Application archives: checked entry by entry, then extracted into a new folder.

An app target is a tar (or a gzip of one; no other compression) of the app folder with
``sensor.toml`` at its top. Refused before anything is extracted
(:class:`~tinyward.update.errors.BadArchive`): absolute paths, ``..``, ``.`` or empty
path parts, backslashes, names that are not UTF-8, symbolic and hard links, devices,
FIFOs, sparse files, duplicate names, a file where a folder is needed, no top-level
``sensor.toml``, and more entries, bytes per file or bytes in all than
:class:`ArchiveLimits` allows; a damaged tar or gzip stream too.

tarfile itself trusts the headers it reads: it would read an extended header (pax
``x``/``g``, GNU long name ``L``/``K``) whole at whatever size it declares (a petabyte,
or 64 MiB of zeros that gzip makes 250 KiB), follow a chain of them by recursion
(``RecursionError``) and read a GNU sparse map to its end (millions of entries). So the
archive is read with :func:`_bounded_tarinfo`, which refuses, *before* tarfile reads
them, an extended header over ``max_header_bytes``, more than ``max_header_chain`` of
them before one member, more than ``max_all_headers_bytes`` in all, any sparse header,
and a negative size. Extraction never follows
a link (none exists in a fresh folder, none is made) and creates every file with
``O_EXCL | O_NOFOLLOW``, mode 0644 (folders 0755), whatever the archive says; every file
and folder is fsynced; a failed extraction leaves no folder behind.

:func:`archive_measurement` gives the attestation measurement the archive's files will
have once extracted, without extracting them: the slot compares it with the tree on disk.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from tinyward._fsutil import fsync_directory
from tinyward.trust.measurement import measurement_digest_of_tree
from tinyward.update.errors import BadArchive

APP_MANIFEST = "sensor.toml"
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    """Limits on an application archive (checked from its headers, before extraction)."""

    max_entries: int = 1000
    max_file_bytes: int = 64 << 20
    max_total_bytes: int = 128 << 20
    max_path_chars: int = 255
    max_depth: int = 16
    #: one extended header (pax record set, GNU long name): a path is 255 characters
    max_header_bytes: int = 64 << 10
    #: extended headers before one member (a pax ``x``, a ``g``, GNU ``L`` and ``K``)
    max_header_chain: int = 4
    #: all extended headers of the archive together
    max_all_headers_bytes: int = 4 << 20


class _Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


#: What a damaged tar or gzip stream raises while it is read (BadGzipFile is an OSError);
#: ValueError, OverflowError: numbers in hostile headers that tarfile does not expect.
_DAMAGED = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, ValueError,
            OverflowError)
_EXTENDED = frozenset({tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                       tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK})


#: tarfile's own header processing (private in typeshed, documented in tarfile.py)
_PROC_MEMBER = getattr(tarfile.TarInfo, "_proc_member")  # noqa: B009


def _bounded_tarinfo(limits: ArchiveLimits) -> type[tarfile.TarInfo]:
    """A TarInfo class that checks each header's declared sizes before tarfile acts on
    them (tarfile's documented hook: ``_proc_member`` may be overridden)."""

    class BoundedTarInfo(tarfile.TarInfo):
        def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
            if self.type == tarfile.GNUTYPE_SPARSE:
                raise BadArchive(f"{self.name!r} in the archive is a sparse file; refused")
            if self.type not in _EXTENDED:
                return _sized(_PROC_MEMBER(self, tar))
            if not 0 <= self.size <= limits.max_header_bytes:
                raise BadArchive(f"an extended tar header of {self.size} bytes, over the "
                                 f"{limits.max_header_bytes}-byte limit")
            seen = getattr(tar, "_tinyward_headers", 0) + self.size
            chain = getattr(tar, "_tinyward_chain", 0) + 1
            if seen > limits.max_all_headers_bytes:
                raise BadArchive("the archive's extended headers hold more than "
                                 f"{limits.max_all_headers_bytes} bytes")
            if chain > limits.max_header_chain:
                raise BadArchive(f"more than {limits.max_header_chain} extended headers "
                                 "before one member")
            tar._tinyward_headers, tar._tinyward_chain = seen, chain  # type: ignore[attr-defined]
            try:
                return _sized(_PROC_MEMBER(self, tar))
            finally:
                tar._tinyward_chain = chain - 1  # type: ignore[attr-defined]

        def _proc_gnusparse_00(self, *args: object) -> None:
            raise BadArchive("a GNU sparse file in the archive; refused")

        _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00

    return BoundedTarInfo


def _sized(member: tarfile.TarInfo) -> tarfile.TarInfo:
    if member.size < 0:  # a pax size may say anything
        raise BadArchive(f"{member.name!r} in the archive has a negative size")
    return member


def _open_tar(path: Path, limits: ArchiveLimits) -> tarfile.TarFile:
    """A plain tar, or a gzip of one (only these: fewer decoders, fewer surprises)."""
    try:
        with open(path, "rb") as handle:
            gzipped = handle.read(2) == b"\x1f\x8b"
        return tarfile.open(path, "r:gz" if gzipped else "r:",
                            tarinfo=_bounded_tarinfo(limits))
    except (*_DAMAGED, OSError) as error:
        raise BadArchive(f"the app target is not a tar archive: {error}") from None


def checked_members(tar: tarfile.TarFile, limits: ArchiveLimits
                    ) -> list[tuple[str, tarfile.TarInfo]]:
    """The archive's entries as ``(safe relative path, member)``, or :class:`BadArchive`
    for the first rule one breaks (see the module doc). Folders are listed too."""
    out: list[tuple[str, tarfile.TarInfo]] = []
    kinds: dict[str, str] = {}
    total = 0
    try:
        for count, member in enumerate(tar, start=1):
            if count > limits.max_entries:
                raise BadArchive(f"the archive has more than {limits.max_entries} entries")
            rel = _safe_name(member.name, limits)
            if member.isdir():
                kind = "dir"
            elif member.isreg() and not member.issparse():
                kind = "file"
                if member.size > limits.max_file_bytes:
                    raise BadArchive(f"{rel} is {member.size} bytes, over the "
                                     f"{limits.max_file_bytes}-byte limit per file")
                total += member.size
                if total > limits.max_total_bytes:
                    raise BadArchive(f"the archive holds more than {limits.max_total_bytes} "
                                     "bytes")
            else:
                what = ("a symbolic link" if member.issym() else "a hard link"
                        if member.islnk() else "a device" if member.isdev() else
                        "a sparse file" if member.issparse() else "not a file or folder")
                raise BadArchive(f"{member.name!r} in the archive is {what}; refused")
            if rel == "":
                if kind != "dir":
                    raise BadArchive("the archive's top entry '.' is not a folder")
                continue
            if rel in kinds:
                raise BadArchive(f"{rel} is in the archive twice")
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if kinds.get(parent) == "file":
                    raise BadArchive(f"{rel} lies under {parent}, which is a file")
                kinds.setdefault(parent, "dir")
            kinds[rel] = kind
            out.append((rel, member))
    except _DAMAGED as error:
        raise BadArchive(f"the archive is damaged: {error}") from None
    if kinds.get(APP_MANIFEST) != "file":
        raise BadArchive(f"the archive has no top-level {APP_MANIFEST}")
    return out


def _safe_name(name: str, limits: ArchiveLimits) -> str:
    if "\x00" in name or "\\" in name:
        raise BadArchive(f"{name!r}: a NUL or backslash in a path; refused")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadArchive(f"{name!r}: the path is not UTF-8; refused") from None
    if name.startswith("/"):
        raise BadArchive(f"{name!r} is an absolute path; refused")
    if len(name) > limits.max_path_chars:
        raise BadArchive(f"a path of {len(name)} characters, over {limits.max_path_chars}")
    rel = name.rstrip("/")
    while rel.startswith("./"):
        rel = rel[2:]
    if rel in (".", ""):
        return ""
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BadArchive(f"{name!r}: '..', '.' or an empty part in a path; refused")
    if len(parts) > limits.max_depth:
        raise BadArchive(f"{name!r} is nested more than {limits.max_depth} deep")
    return str(PurePosixPath(*parts))


def extract_app(archive: Path, dest: Path, limits: ArchiveLimits) -> None:
    """Check every entry of ``archive`` (:func:`checked_members`), then extract it into the
    new folder ``dest`` (which must not exist), fsyncing every file and folder."""
    with _open_tar(archive, limits) as tar:
        members = checked_members(tar, limits)
        make_dir(dest, exist_ok=False)
        try:
            _extract(tar, members, dest)
        except BaseException as error:
            shutil.rmtree(dest, ignore_errors=True)  # nothing half-extracted stays
            if isinstance(error, _DAMAGED):
                raise BadArchive(f"the archive is damaged: {error}") from None
            raise


def _extract(tar: tarfile.TarFile, members: list[tuple[str, tarfile.TarInfo]],
             dest: Path) -> None:
    folders = [dest]
    for rel, member in members:
        path = dest / rel
        for parent in reversed(path.relative_to(dest).parents[:-1]):
            if not (dest / parent).is_dir():
                make_dir(dest / parent, exist_ok=False)
                folders.append(dest / parent)
        if member.isdir():
            if not path.is_dir():
                make_dir(path, exist_ok=False)
                folders.append(path)
            continue
        source = tar.extractfile(member)
        if source is None:  # cannot happen for a regular member
            raise BadArchive(f"{rel} cannot be read from the archive")
        write_new(path, source, member.size)
    for folder in reversed(folders):
        fsync_directory(folder)


def archive_measurement(archive: Path, limits: ArchiveLimits) -> bytes:
    """The measurement the archive's files give once extracted (without extracting)."""
    with _open_tar(archive, limits) as tar:
        files = [(rel, m.size, _opener(tar, m)) for rel, m in checked_members(tar, limits)
                 if m.isreg()]
        try:
            return measurement_digest_of_tree(files)
        except _DAMAGED as error:
            raise BadArchive(f"the archive is damaged: {error}") from None


def _opener(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Any:
    def open_member() -> IO[bytes]:
        stream = tar.extractfile(member)
        if stream is None:
            raise BadArchive(f"{member.name} cannot be read from the archive")
        return stream
    return open_member


def make_dir(path: Path, exist_ok: bool = True) -> None:
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        if not exist_ok or path.is_symlink() or not path.is_dir():
            raise
        return
    os.chmod(path, 0o755)  # noqa: S103 (whatever the umask: the sandbox's user reads an app)


def write_new(path: Path, source: _Readable, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        os.fchmod(fd, 0o644)
        remaining = size
        with os.fdopen(fd, "wb", closefd=False) as out:
            while remaining > 0:
                chunk = source.read(min(_CHUNK, remaining))
                if not chunk:
                    raise BadArchive(f"{path.name} is cut short in the archive")
                out.write(chunk)
                remaining -= len(chunk)
            out.flush()
            os.fsync(fd)
    finally:
        os.close(fd)
