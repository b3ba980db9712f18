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

import os

from tinyward.trust import landlock

_MAKE_CHAR, _REFER = 1 << 5, 1 << 13


def enter_domain() -> int:
    """Put this thread (and what it later starts or executes) in a new Landlock domain.
    Needs no_new_privs. Returns the kernel's Landlock ABI.

    Raises :class:`OSError` if Landlock is unavailable or refuses.
    """
    abi = landlock.abi_version()
    if abi < 1:
        raise OSError("Landlock is not available (or disabled at boot)")
    handled = _MAKE_CHAR | (_REFER if abi >= 2 else 0)
    ruleset = landlock.create_ruleset(abi, handled)
    try:
        root = os.open("/", os.O_PATH | os.O_CLOEXEC)
        try:
            landlock.allow_beneath(ruleset, handled, root, "/")
        finally:
            os.close(root)
        landlock.restrict_self(ruleset)
    finally:
        os.close(ruleset)
    return abi
