"""Crash-safe file writes shared by every part of tinyward that keeps state on disk.

A reader must only ever see a file's old content or its new content, never a torn mix,
even if the power fails half-way. The recipe (STYLE.md §7): write a temporary file in the
*same* directory (so the rename cannot cross file systems), fsync it, ``os.replace`` it
over the target (atomic on POSIX), then fsync the directory so the rename itself survives
a crash. Files are created with the final mode from the start, so a secret is never
readable by others, not even for a moment.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry (after a create, rename or delete) to stable storage.

    Raises:
        OSError: the directory cannot be opened or synced.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file.

    The file gets permission bits ``mode`` (default 0600, owner only) regardless of the
    umask. A leftover temporary file from an interrupted write is named ``.<name>.*.tmp``
    and never mistaken for the target.

    Raises:
        OSError: the directory does not exist or cannot be written; the target is untouched.
    """
    path = Path(path)
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp creates the file 0600; set the final mode before any byte is written.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        # Covers KeyboardInterrupt too: never leave a half-written temporary behind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_directory(directory)


def create_exclusive(path: Path, data: bytes, mode: int = PRIVATE_FILE_MODE) -> None:
    """Create ``path`` holding ``data``; refuse if it exists (``O_EXCL``), never replace it.

    For a file that must be made once and never overwritten (a device's root key): the
    file and then its directory entry are fsynced, so a crash right after cannot lose a key
    that was already used. A write that fails removes the file, so a retry can make it.

    Raises:
        FileExistsError: ``path`` exists.
        OSError: the directory does not exist or cannot be written.
    """
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow it
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def make_private_directory(path: Path) -> None:
    """Create ``path`` (not its parents) with mode 0700, regardless of the umask.

    Raises:
        FileExistsError: ``path`` already exists.
        OSError: the parent does not exist or cannot be written.
    """
    os.mkdir(path, PRIVATE_DIR_MODE)
    os.chmod(path, PRIVATE_DIR_MODE)


def make_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700; an existing one is tightened.

    Raises:
        OSError: it cannot be created.
    """
    Path(path).mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)
