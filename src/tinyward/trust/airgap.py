"""Air-gapped mode, enforced by the kernel rather than promised.

:func:`forbid_network` installs a seccomp-BPF filter (libseccomp through ``pyseccomp``) on
the calling process. From then on, in this process and in every process it starts (seccomp
filters are inherited across fork and exec, and cannot be removed), creating any socket
that is not a local ``AF_UNIX`` socket fails with ``EPERM``: no ``AF_INET``, ``AF_INET6``,
``AF_PACKET``, ``AF_NETLINK``, ``AF_BLUETOOTH`` or any other family. ``io_uring`` is refused
too, since it can create sockets without the ``socket`` system call. System calls of other
architectures (e.g. 32-bit ``socketcall`` on x86-64) kill the process (libseccomp's
default for a foreign architecture). ``no_new_privs`` is set, as seccomp requires.

A bug, or a compromised application, therefore cannot open a network connection.
"""

from __future__ import annotations

import errno
import socket

from tinyward.trust.errors import TrustError


class NetworkFilterUnavailable(TrustError):
    """The kernel or libseccomp cannot install the filter; air-gapped mode will not start."""


def forbid_network() -> None:
    """Refuse every non-``AF_UNIX`` socket in this process tree from now on (irreversible).

    Raises :class:`NetworkFilterUnavailable` if the filter cannot be installed — air-gapped
    mode must then refuse to run rather than run unprotected.
    """
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as error:  # libseccomp missing
        raise NetworkFilterUnavailable(f"libseccomp is not available: {error}") from None
    try:
        refuse = seccomp.ERRNO(errno.EPERM)
        scf = seccomp.SyscallFilter(seccomp.ALLOW)
        scf.add_rule(refuse, "socket", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
        scf.add_rule(refuse, "socketpair", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
        for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
            scf.add_rule(refuse, name)
        scf.load()
    except (OSError, RuntimeError, ValueError) as error:
        raise NetworkFilterUnavailable(f"could not install the seccomp filter: {error}") from None


def network_is_forbidden() -> bool:
    """True if this process cannot create an internet socket (checked by trying)."""
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except PermissionError:
        return True
    probe.close()
    return False
