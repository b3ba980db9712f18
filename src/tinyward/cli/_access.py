"""Can another user (the sandbox's) read a folder? Said at start, not found out later.

When tinyward runs as root the application runs under an unprivileged uid (``nobody`` by
default). An application under a folder that uid cannot enter or read (e.g. a
``mktemp -d`` folder, mode 0700) would never start; :func:`unreadable_by` names the first
path in the way and why, from the permission bits alone (POSIX ACLs are not consulted, so
the answer errs toward "readable" only if an ACL grants more than the bits).
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from tinyward.errors import BadInput

MAX_FILES_CHECKED = 2000  # an application folder is small; never walk a whole disk


class AppUnreadable(BadInput):
    """The sandboxed application's files cannot be read by the uid it runs under."""


@dataclass(frozen=True)
class Who:
    """A user as the kernel checks it: uid and every group it belongs to."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def named(cls, name: str) -> Who:
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, frozenset(os.getgrouplist(name, entry.pw_gid)))


def _allowed(info: os.stat_result, who: Who, want: int) -> bool:
    """``want`` is a mask of 4 (read), 2 (write), 1 (search/execute) as in chmod's digits."""
    if who.uid == 0:
        return True
    if info.st_uid == who.uid:
        bits = (info.st_mode >> 6) & 7
    elif info.st_gid in who.gids:
        bits = (info.st_mode >> 3) & 7
    else:
        bits = info.st_mode & 7
    return bits & want == want


def _why(path: Path, info: os.stat_result, need: str) -> str:
    owner = _user_name(info.st_uid)
    return f"{path} is mode {stat.S_IMODE(info.st_mode):04o}, owned by {owner}: no {need}"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _walk(folder: Path) -> list[tuple[Path, bool]]:
    """``(path, is_folder)`` for ``folder`` and what lies beneath it, at most
    :data:`MAX_FILES_CHECKED` entries."""
    found: list[tuple[Path, bool]] = [(folder, True)]
    for root, dirs, files in os.walk(folder):
        found += [(Path(root, d), True) for d in dirs] + [(Path(root, f), False) for f in files]
        if len(found) >= MAX_FILES_CHECKED:
            break
    return found[:MAX_FILES_CHECKED]


def unreadable_by(folder: Path, who: Who, extra_files: tuple[Path, ...] = ()) -> str | None:
    """Why ``who`` cannot read ``folder`` (each folder above it searchable, it and what lies
    beneath readable) or ``extra_files`` (e.g. models kept elsewhere); ``None`` if it can."""
    folder = folder.resolve()
    extra = [Path(p).resolve() for p in extra_files]
    for target in (folder, *extra):
        for ancestor in reversed(target.parents):
            info = ancestor.stat()
            if not _allowed(info, who, 1):
                return _why(ancestor, info, "search (x) permission")
    for path, is_folder in _walk(folder) + [(p, False) for p in extra]:
        info = path.stat()
        if is_folder and not _allowed(info, who, 5):
            return _why(path, info, "read and search (r-x) permission")
        if not is_folder and stat.S_ISREG(info.st_mode) and not _allowed(info, who, 4):
            return _why(path, info, "read (r) permission")
    return None


def check_app_readable(folder: Path, user: str, extra_files: tuple[Path, ...] = ()) -> None:
    """Refuse, before anything starts, an application its sandbox user could not read.

    Only when running as root: otherwise the sandbox keeps this process's uid, which has
    just read the manifest.

    Raises:
        AppUnreadable: the first path in the way, its mode and owner, and what to do.
    """
    if os.geteuid() != 0:
        return
    try:
        who = Who.named(user)
    except KeyError:
        return  # the sandbox itself says the user is missing, with its own message
    reason = unreadable_by(folder, who, extra_files)
    if reason is not None:
        raise AppUnreadable(
            f"the application cannot be read by its sandbox user {who.name} (uid {who.uid}): "
            f"{reason}; put it in a folder others can read (e.g. chmod o+rx on that folder)"
        )
