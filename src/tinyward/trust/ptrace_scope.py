"""Other processes out of the core's reach, whatever its uid and capabilities: a Landlock
domain that restricts no file access.

A process inside a Landlock domain may ptrace (and so open ``/proc/PID/mem`` of) only
processes in the same domain or one nested in it — its own children — whatever the uids
and capabilities (Landlock ABI 1, Linux 5.13). The capability drop alone leaves two ways
round: a core that keeps ``CAP_SETUID`` for the sandbox becomes another uid, and an
unprivileged core already shares its uid with other processes.

The ruleset handles one right (creating character devices; and, from ABI 2, reparenting
files, which Landlock otherwise denies by default) and grants both beneath ``/``: the
core's files stay as they were. Like capabilities, a domain belongs to a thread and
passes through ``exec``; see :func:`tinyward.trust.airgap.isolate`.
"""

from __future__ import annotations

import ctypes
import os

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION, _RULE_PATH_BENEATH = 1, 1
_MAKE_CHAR, _REFER = 1 << 5, 1 << 13


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def enter_domain() -> int:
    """Put this thread (and what it later starts or executes) in a new Landlock domain.
    Needs no_new_privs. Returns the kernel's Landlock ABI.

    Raises :class:`OSError` if Landlock is unavailable or refuses.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = int(libc.syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION))
    if abi < 1:
        raise OSError(ctypes.get_errno(), "Landlock is not available (or disabled at boot)")
    handled = _MAKE_CHAR | (_REFER if abi >= 2 else 0)
    attr = _RulesetAttr(handled)
    ruleset = int(libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        root = os.open("/", os.O_PATH | os.O_CLOEXEC)
        try:
            rule = _PathBeneathAttr(handled, root)
            if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0):
                raise OSError(ctypes.get_errno(), "landlock_add_rule failed for /")
        finally:
            os.close(root)
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0):
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return abi
