"""Landlock (Linux ≥ 5.13) through its three syscalls, via ctypes.

The ruleset "handles" every filesystem right the kernel's ABI knows, and TCP bind/connect
(ABI ≥ 4), and scopes abstract UNIX sockets and signals to the sandbox (ABI ≥ 6); then
it allows only reading files and listing directories beneath the given paths. Anything
else — reading the keystore, writing anywhere, connecting over TCP — fails with EACCES,
whatever the uid. A process cannot undo its own Landlock domain.
"""

from __future__ import annotations

import os

from tinyward.trust.landlock import abi_version, allow_beneath, create_ruleset, restrict_self

__all__ = ["abi_version", "restrict_to_read_only"]

_READ_FILE = 1 << 2
_READ_DIR = 1 << 3
# All filesystem rights of ABI 1, then the ones later ABIs added.
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_ALL = (1 << 0) | (1 << 1)  # BIND_TCP, CONNECT_TCP (ABI 4)
_SCOPE_ALL = (1 << 0) | (1 << 1)  # ABSTRACT_UNIX_SOCKET, SIGNAL (ABI 6)
_FILE_RIGHTS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)


def _fs_rights(abi: int) -> int:
    return max(v for k, v in _FS_BY_ABI.items() if k <= abi)


def restrict_to_read_only(paths: list[str]) -> str:
    """Confine this process (and future children) to reading beneath ``paths``.

    Needs ``PR_SET_NO_NEW_PRIVS`` (or CAP_SYS_ADMIN). Paths that do not exist are skipped.
    Returns a one-line description of what was enforced.

    Raises:
        OSError: Landlock is unavailable, or a syscall failed.
    """
    abi = abi_version()
    if abi < 1:
        raise OSError("Landlock is not available in this kernel (or disabled at boot)")
    ruleset = create_ruleset(abi, _fs_rights(abi), _NET_ALL, _SCOPE_ALL)
    try:
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                rights = _READ_FILE | _READ_DIR
                if not os.path.isdir(path):
                    rights &= _FILE_RIGHTS
                allow_beneath(ruleset, rights, fd, path)
            finally:
                os.close(fd)
        restrict_self(ruleset)
    finally:
        os.close(ruleset)
    extras = []
    if abi >= 4:
        extras.append("TCP bind/connect denied")
    if abi >= 6:
        extras.append("signals and abstract sockets scoped")
    detail = f"ABI {abi}: read-only beneath {len(paths)} paths, no writes"
    return detail + (", " + ", ".join(extras) if extras else "")
