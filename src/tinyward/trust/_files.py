"""The trusted core's file adapter: every disk access of storage, root of trust and keystore.

The core's logic (record sealing, counter integrity, key policy) takes bytes and returns
bytes; this module is the thin layer that puts those bytes in files. Three things live here:

- :class:`FileFolder`: a folder of small files, one per name, written atomically
  (``_fsutil.atomic_write``: temp file, fsync, rename, directory fsync) and read with a
  size limit.
- :func:`exclusive`: a cross-process lock (``fcntl.flock`` on a lock file) that is
  re-entrant within a thread, so protected storage can hold it across a record write and
  the counter update inside it. Without it two processes that read, change and rewrite one
  file lose each other's changes (counters going backwards, versions reused, lockout
  failures not counted).
- :func:`read_limited`: the root of trust's raw read (its root key is made once by
  :func:`tinyward._fsutil.create_exclusive`, like every file write in one place).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from tinyward._fsutil import atomic_write, make_private_dir


class _Held:
    """One process's handle on one lock file while some thread uses it: an fd, a thread
    lock, the nesting depth of its holder and how many threads hold or wait for it."""

    def __init__(self, path: str) -> None:
        self.pid = os.getpid()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.mutex = threading.RLock()
        self.depth = 0
        self.users = 0


_guard = threading.Lock()
_held: dict[str, _Held] = {}


def _forget_after_fork() -> None:
    # A forked child shares the parent's open file descriptions, so flock would treat the
    # two as one holder. The child opens its own; closing the inherited fds is safe (the
    # lock goes only when the last reference to the description closes).
    global _guard
    _guard = threading.Lock()
    for held in _held.values():
        os.close(held.fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold the exclusive lock on ``lock_path`` (created 0600 if missing) for the block.

    Other processes (and other threads) wait; the same thread may nest it freely.
    ``lock_path`` should be resolved (:func:`os.path.realpath`) so that one file has one key.
    The file stays open only while the lock is in use (a process may open many devices).
    """
    key = str(lock_path)
    with _guard:
        held = _held.get(key)
        if held is None or held.pid != os.getpid():
            held = _held[key] = _Held(key)
        held.users += 1
    try:
        with held.mutex:
            if held.depth == 0:
                fcntl.flock(held.fd, fcntl.LOCK_EX)
            held.depth += 1
            try:
                yield
            finally:
                held.depth -= 1
                if held.depth == 0:
                    fcntl.flock(held.fd, fcntl.LOCK_UN)
    finally:
        with _guard:
            held.users -= 1
            if held.users == 0:
                os.close(held.fd)
                if _held.get(key) is held:
                    del _held[key]


def lock_for(lock_path: Path, unsafe_no_lock: bool = False) -> AbstractContextManager[None]:
    """:func:`exclusive`, or nothing at all when ``unsafe_no_lock`` (to show the race in tests)."""
    return nullcontext() if unsafe_no_lock else exclusive(lock_path)


def resolved(path: Path) -> Path:
    """``path`` resolved once, as :func:`exclusive` wants it."""
    return Path(os.path.realpath(path))


def read_limited(path: Path, max_bytes: int) -> bytes | None:
    """The file's bytes, ``None`` if it does not exist; raises ``ValueError`` if it is
    larger than ``max_bytes`` (nothing past the limit is read)."""
    try:
        with open(path, "rb") as handle:
            # Size first: read(max_bytes + 1) would allocate the whole limit on every read.
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise ValueError(f"{path} is larger than {max_bytes} bytes")
            data = handle.read(min(size + 1, max_bytes + 1))
    except FileNotFoundError:
        return None
    if len(data) > max_bytes:  # it grew after the fstat
        raise ValueError(f"{path} is larger than {max_bytes} bytes")
    return data


class FileFolder:
    """A private folder of files named ``<name><suffix>``; names are checked by the caller."""

    def __init__(self, directory: Path, suffix: str, create: bool = True) -> None:
        self.directory = Path(directory)
        self.suffix = suffix
        if create:
            make_private_dir(self.directory)
        self._lock_path = resolved(self.directory / ".lock")

    def path(self, name: str) -> Path:
        return self.directory / f"{name}{self.suffix}"

    def read(self, name: str, max_bytes: int) -> bytes | None:
        return read_limited(self.path(name), max_bytes)

    def write(self, name: str, data: bytes) -> None:
        atomic_write(self.path(name), data)

    def names(self, prefix: str = "") -> list[str]:
        return sorted(p.name[: -len(self.suffix)]
                      for p in self.directory.glob(f"{prefix}*{self.suffix}")
                      if not p.name.startswith("."))

    def lock(self, unsafe_no_lock: bool = False) -> AbstractContextManager[None]:
        """The folder's exclusive lock (file ``.lock`` in it)."""
        return lock_for(self._lock_path, unsafe_no_lock)
