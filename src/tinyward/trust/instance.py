"""One running instance per device folder, in every mode, and what that instance enforces.

``tinyward device run`` (connected or air-gapped) holds an exclusive ``flock`` on
``DIR/instance.lock`` for as long as it runs: a second run on the same folder is refused
with :class:`DeviceBusy`, whichever mode either asks for (two instances would interleave
protected-storage writes and sequence numbers). The lock goes with the process, however it
ends, so a crash never leaves the folder locked.

While it holds the lock the instance writes into the file the mode actually enforced in
its process tree (derived by :func:`tinyward.trust.airgap.enforced_mode`, not from
provisioning) and the names of the protections in force, for ``tinyward device status``.
:func:`running_instance` believes that record only while the lock is held, so a stale one
is never shown.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from tinyward.errors import Misuse, StateError
from tinyward.trust.errors import TrustError

LOCK_NAME = "instance.lock"
_MAX_RECORD = 16 * 1024
#: Locks this process holds (a runner nested in the command that took the lock shares it).
_HELD: dict[Path, InstanceLock] = {}


class DeviceBusy(TrustError, StateError):
    """Another process is already running this device (one instance per folder)."""


@dataclass(frozen=True)
class RunningInstance:
    """What the instance running a device folder says about itself."""

    pid: int
    mode: str
    protections: tuple[str, ...]


class InstanceLock:
    """Hold ``DIR/instance.lock``.

    ``lend=True``: a lock taken *in this process* while this one is held shares it instead
    of being refused — for the command that runs the device, so that the runner it starts
    (which takes the lock itself) nests. Without it, a second lock on the folder is refused
    in this process as in any other.
    """

    def __init__(self, directory: Path, mode: str = "connected", *, lend: bool = False) -> None:
        self._path = Path(directory).resolve() / LOCK_NAME
        self.mode = mode
        self.lend = lend
        self.protections: tuple[str, ...] = ()
        self._fd: int | None = None
        self._folder_fd: int | None = None
        self._outer: InstanceLock | None = None

    def __enter__(self) -> Self:
        held = _HELD.get(self._path)
        if held is not None and held.lend:
            self._outer = held  # the command already holds it: share, do not re-lock
            return self
        # The folder itself is locked too: a file inside it can be deleted or renamed
        # while the device runs (a second run would then lock a fresh one), the folder
        # cannot be replaced by a file operation inside it. O_NOFOLLOW: a lock file
        # replaced by a symlink must not make the device write to (truncate) its target.
        folder = os.open(self._path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fd = -1
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process, or another holder in this one
            os.close(folder)
            if fd >= 0:
                os.close(fd)
            raise DeviceBusy(
                f"another process is running the device in {self._path.parent}"
                " (one instance per device folder, in every mode)"
            ) from None
        except BaseException:
            os.close(folder)
            if fd >= 0:
                os.close(fd)
            raise
        self._fd = fd
        self._folder_fd = folder
        _HELD[self._path] = self
        self._write()
        return self

    def record(
        self, *, mode: str | None = None, protections: tuple[str, ...] | None = None
    ) -> None:
        """Update what the running instance says it enforces."""
        owner = self._outer or self
        if mode is not None:
            owner.mode = mode
        if protections is not None:
            owner.protections = tuple(protections)
        owner._write()

    def _write(self) -> None:
        if self._fd is None:
            raise Misuse("the instance lock is not held")
        data = json.dumps({"pid": os.getpid(), "mode": self.mode,
                           "protections": list(self.protections)}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def __exit__(self, *exc: object) -> None:
        if self._outer is not None:
            self._outer = None
            return
        if self._fd is not None:
            _HELD.pop(self._path, None)
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
        if self._folder_fd is not None:
            os.close(self._folder_fd)
            self._folder_fd = None


def running_instance(directory: Path) -> RunningInstance | None:
    """The instance running ``directory`` now, or ``None`` (nobody holds the lock)."""
    path = Path(directory).resolve() / LOCK_NAME
    held = _HELD.get(path)
    if held is not None:
        return RunningInstance(os.getpid(), held.mode, held.protections)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return _folder_held(path.parent)
    except OSError:  # e.g. ELOOP: a symlink where the lock file should be
        return _folder_held(path.parent)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            # we could lock it: nobody runs the device, unless this file replaced the one
            # a running instance locked (it holds the folder too)
            return _folder_held(path.parent)
        except BlockingIOError:
            pass
        raw = os.pread(fd, _MAX_RECORD, 0)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
        return RunningInstance(int(data["pid"]), str(data["mode"]),
                               tuple(str(p) for p in data["protections"]))
    except (ValueError, KeyError, TypeError):
        # Locked but not yet written (the instance is starting): running, mode unknown.
        return RunningInstance(0, "starting", ())


def _folder_held(folder: Path) -> RunningInstance | None:
    """Running (mode unknown) if some process holds the folder's lock, else ``None``."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return RunningInstance(0, "starting", ())
    finally:
        os.close(fd)


__all__ = ["LOCK_NAME", "DeviceBusy", "InstanceLock", "RunningInstance", "running_instance"]
