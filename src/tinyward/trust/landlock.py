"""Landlock's three system calls through ctypes: the one place both of tinyward's
Landlock users build on.

- :mod:`tinyward.app._landlock` confines the untrusted application to reading its own
  files (every right handled, read rights granted beneath a few paths);
- :mod:`tinyward.trust.ptrace_scope` puts the air-gapped core in a domain that restricts
  no file access, so that other processes are out of its ptrace reach.

Linux 5.13 or newer (ABI 1); later ABIs add rights, TCP (4) and scoping (6). A domain
belongs to the calling thread and everything it later starts or executes; it cannot be
undone.
"""

from __future__ import annotations

import ctypes

__all__ = ["abi_version", "allow_beneath", "create_ruleset", "restrict_self"]

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The kernel's Landlock ABI version, or 0 if Landlock is unavailable or disabled."""
    result = _libc.syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
    return int(result) if result > 0 else 0


def create_ruleset(abi: int, fs: int, net: int = 0, scoped: int = 0) -> int:
    """A new ruleset handling the ``fs`` rights (and ``net``/``scoped`` where the ABI
    knows them); returns its file descriptor, which the caller closes.

    Raises :class:`OSError` if the kernel refuses.
    """
    attr = _RulesetAttr(fs, net if abi >= 4 else 0, scoped if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8  # the struct as this ABI knows it
    ruleset = int(_libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), size, 0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    return ruleset


def allow_beneath(ruleset: int, rights: int, parent_fd: int, what: str) -> None:
    """Grant ``rights`` beneath the folder or file open as ``parent_fd`` (``O_PATH``).

    Raises :class:`OSError` naming ``what`` if the kernel refuses.
    """
    rule = _PathBeneathAttr(rights, parent_fd)
    if _libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0):
        raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {what}")


def restrict_self(ruleset: int) -> None:
    """Enforce ``ruleset`` on this thread and what it starts (needs no_new_privs).

    Raises :class:`OSError` if the kernel refuses.
    """
    if _libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0):
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
