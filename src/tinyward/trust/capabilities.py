"""Dropping Linux capabilities, through ``prctl`` and ``capset`` via ctypes.

Why the air gap needs it: ``/proc/PID/mem`` opened for writing lets a process make
another one send for it, with an ``open`` and a ``write`` no seccomp filter can tell
from any other. The kernel guards that file with its ptrace access check, which (without
``CAP_SYS_PTRACE``) requires the target's *permitted* capabilities to be a subset of the
caller's effective ones, and the same uid. A core that keeps only a few capabilities can
then reach no full-capability root process and, without ``CAP_SYS_PTRACE``, no process of
another uid.

Capabilities belong to a thread, not a process: :func:`drop` changes the calling thread
only, and :func:`check_dropped` reads every thread's (``/proc/self/task/*/status``), so a
thread started earlier with the old set (numpy's BLAS pool) is found, not assumed away.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SETPCAP = 5, 6, 7, 8
NAMES = {CAP_KILL: "CAP_KILL", CAP_SETGID: "CAP_SETGID", CAP_SETUID: "CAP_SETUID"}

_PR_CAPBSET_READ, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS = 23, 24, 38
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
    return libc


def _fail(what: str) -> OSError:
    error = ctypes.get_errno()
    return OSError(error, f"{what}: {os.strerror(error)}")


def last_cap() -> int:
    return int(Path("/proc/sys/kernel/cap_last_cap").read_text())


def thread_sets(status: str) -> dict[str, int]:
    """The five capability sets of one ``/proc/…/status`` text, as bit masks."""
    found = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in _SETS:
            found[key] = int(value, 16)
    return found


def drop(keep: frozenset[int]) -> None:
    """Keep only ``keep`` (where held) in this thread's bounding, permitted and effective
    sets; empty its inheritable and ambient sets; set no_new_privs. Irreversible.

    Raises :class:`OSError` if the kernel refuses any step.
    """
    libc = _libc()
    wanted = 0
    for cap in keep:
        wanted |= 1 << cap
    # The bounding set first: dropping from it needs CAP_SETPCAP, which capset removes.
    for cap in range(last_cap() + 1):
        if cap in keep or libc.prctl(_PR_CAPBSET_READ, cap, 0, 0, 0) != 1:
            continue
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise _fail(f"PR_CAPBSET_DROP {cap}")
    if libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        raise _fail("PR_CAP_AMBIENT_CLEAR_ALL")
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise _fail("capget")
    for word in (0, 1):  # version 3: two 32-bit words per set
        mask = wanted >> (32 * word) & 0xFFFFFFFF
        data[word].permitted &= mask
        data[word].effective = data[word].permitted
        data[word].inheritable = 0
    if libc.capset(ctypes.byref(header), data) != 0:
        raise _fail("capset")
    set_no_new_privs()


def set_no_new_privs() -> None:
    """From now on ``exec`` gains nothing (setuid bits, file capabilities) in this thread
    and its children."""
    if _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _fail("PR_SET_NO_NEW_PRIVS")


def check_dropped(keep: frozenset[int]) -> list[str]:
    """What any thread of this process still holds beyond ``keep`` (empty: nothing)."""
    allowed = 0
    for cap in keep:
        allowed |= 1 << cap
    extra = []
    for task in sorted(Path("/proc/self/task").iterdir()):
        try:
            sets = thread_sets((task / "status").read_text())
        except OSError:
            continue  # a thread that ended meanwhile
        for name, mask in sets.items():
            beyond = mask & ~allowed if name in ("CapPrm", "CapEff", "CapBnd") else mask
            if beyond:
                extra.append(f"thread {task.name} {name} {beyond:#x}")
    return extra


def held() -> int:
    """This thread's permitted set."""
    return thread_sets(Path("/proc/thread-self/status").read_text()).get("CapPrm", 0)


def names(keep: frozenset[int]) -> list[str]:
    return [NAMES.get(cap, f"cap {cap}") for cap in sorted(keep)]
