"""Air-gapped mode, enforced by the kernel rather than promised.

:func:`forbid_network` installs a seccomp-BPF filter (libseccomp through ``pyseccomp``) on
the calling process. From then on, in this process and in every process it starts (seccomp
filters are inherited across fork and exec, and cannot be removed):

- ``socket()`` fails with ``EPERM`` for **every** family, ``AF_UNIX`` included: no
  ``AF_INET``/``AF_INET6``/``AF_PACKET``/``AF_NETLINK``/Bluetooth, and no connection to a
  local daemon (D-Bus, ``/dev/log``, a proxy's UNIX socket) either;
- ``socketpair()`` only for ``AF_UNIX`` stream or seqpacket pairs (already connected to
  each other; a datagram pair could be sent from to any named UNIX socket);
- ``connect``, ``bind``, ``listen`` fail, whatever descriptor they are given;
- ``pidfd_getfd`` (taking a socket from another process), ``ptrace`` and
  ``process_vm_readv``/``writev`` (making another process send), ``setns`` (joining the
  host's network namespace again) and ``io_uring`` (sockets without ``socket()``) fail;
- system calls of other architectures (e.g. 32-bit ``socketcall``) kill the process.

:func:`isolate` is what ``tinyward device run --air-gapped`` calls first: it closes the
descriptors the process inherited (an open socket to anything would survive a filter on
``socket()``), moves the process into a new, empty network namespace when it may (root
with ``CAP_SYS_ADMIN``: only a loopback interface, down), drops its capabilities and
enters a Landlock domain (so that no other process's memory can be written through
``/proc/PID/mem``, which is an ``open`` and a ``write`` to seccomp; see
:mod:`tinyward.trust.capabilities` and :mod:`tinyward.trust.ptrace_scope`), and installs
the filter.

:func:`enforced_mode` says which mode is *actually* in force in this process, by trying to
make an internet socket — it is what the device states in its status, attestation tokens
and reports, never the mode it was provisioned with.
"""
from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass

from tinyward.trust import capabilities, ptrace_scope
from tinyward.trust.errors import TrustError


class NetworkFilterUnavailable(TrustError):
    """The kernel or libseccomp cannot install the filter; air-gapped mode will not start."""


#: System calls that reach the network, or another process's sockets, without socket().
REFUSED_SYSCALLS = (
    "connect", "bind", "listen", "pidfd_getfd", "ptrace", "process_vm_readv",
    "process_vm_writev", "setns", "io_uring_setup", "io_uring_enter", "io_uring_register",
)
_SOCK_TYPE_MASK = 0xF
_CLONE_NEWNET = 0x40000000
_CAP_SYS_ADMIN = 21


def forbid_network() -> None:
    """Refuse every socket but connected ``AF_UNIX`` pairs in this process tree (irreversible).

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
        # Every thread of the process, not only the caller (numpy's BLAS threads exist
        # before the filter does).
        scf.set_attr(seccomp.Attr.CTL_TSYNC, 1)
        scf.add_rule(refuse, "socket")
        scf.add_rule(refuse, "socketpair", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
        # AF_UNIX turns SOCK_RAW into SOCK_DGRAM; only the two connection types pass.
        for kind in range(_SOCK_TYPE_MASK + 1):
            if kind not in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
                scf.add_rule(refuse, "socketpair",
                             seccomp.Arg(1, seccomp.MASKED_EQ, _SOCK_TYPE_MASK, kind))
        for name in REFUSED_SYSCALLS:
            if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) >= 0:
                scf.add_rule(refuse, name)
        scf.load()
    except (OSError, RuntimeError, ValueError) as error:
        raise NetworkFilterUnavailable(f"could not install the seccomp filter: {error}") from None


@dataclass(frozen=True)
class AirGap:
    """What :func:`isolate` put in force (printed at start)."""

    closed_fds: tuple[int, ...]
    network_namespace: str
    #: The capabilities kept (names), or None when none were held (not root) or the drop
    #: was switched off; ``capabilities_note`` says which.
    kept_capabilities: tuple[str, ...] | None = None
    capabilities_note: str = ""
    #: "ABI n" when the Landlock domain is in force, else why not.
    ptrace_scope: str = "off"

    def describe(self) -> list[str]:
        closed = (f"closed {len(self.closed_fds)} inherited descriptors {list(self.closed_fds)}"
                  if self.closed_fds else "no inherited descriptors")
        return [("seccomp: no socket() of any family, no connect/bind/listen, no pidfd_getfd, "
                 "ptrace, setns or io_uring (whole process tree)"),
                f"descriptors: {closed}", f"network namespace: {self.network_namespace}",
                f"capabilities: {self.capabilities_note}",
                f"other processes: {self._scope_note()}"]

    def _scope_note(self) -> str:
        if self.ptrace_scope.startswith("ABI"):
            return (f"out of ptrace's reach, /proc/PID/mem included (Landlock domain, "
                    f"{self.ptrace_scope})")
        return f"reachable by a process of their uid ({self.ptrace_scope})"

    def protections(self) -> list[str]:
        """Names for the attestation claim and ``device status``."""
        names = ["air gap: seccomp network filter", "air gap: inherited descriptors closed"]
        if self.network_namespace.startswith("new"):
            names.append("air gap: empty network namespace")
        if self.kept_capabilities is not None:
            kept = ", ".join(self.kept_capabilities) or "none"
            names.append(f"air gap: capabilities dropped (kept: {kept})")
        if self.ptrace_scope.startswith("ABI"):
            names.append("air gap: other processes out of ptrace reach (Landlock)")
        return names


def close_inherited_fds() -> tuple[int, ...]:
    """Close every descriptor above 2 this process inherited; put /dev/null on 0-2 if one
    of them is a socket. Returns the descriptors closed.

    Python opens every descriptor of its own close-on-exec (PEP 446), so a descriptor
    without FD_CLOEXEC is one that came through exec from whoever started the device.
    """
    closed = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            flags = _fcntl_getfd(fd)
        except OSError:
            continue  # the listing's own descriptor, already gone
        if fd > 2 and not flags & 1:  # FD_CLOEXEC
            os.close(fd)
            closed.append(fd)
    for fd in (0, 1, 2):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, fd)
                os.close(null)
                closed.append(fd)
        except OSError:
            continue
    return tuple(sorted(closed))


def _fcntl_getfd(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFD)


#: Set across the re-exec of :func:`enter_empty_network_namespace` (the namespace's inode).
_NETNS_MARK = "TINYWARD_AIRGAP_NETNS"


def enter_empty_network_namespace(before_exec: Callable[[], None] | None = None) -> str:
    """Move this process into a new, empty network namespace, when it may (root with
    ``CAP_SYS_ADMIN``); otherwise say why not (the seccomp filter still applies).

    A namespace change affects only the calling thread, and the device already has
    threads (numpy's BLAS pool starts at import), so the process unshares and then
    re-executes itself with the same arguments: the new image starts single-threaded
    inside the new namespace, and calls this again, which then finds it done.

    ``before_exec``, if given, runs just before the re-execution, which then happens even
    without a new namespace: the capability drop and the Landlock domain belong to the
    calling thread and pass through ``exec``, so the new image and every thread it starts
    have them.

    Raises :class:`NetworkFilterUnavailable` if it may and still fails.
    """
    here = os.readlink("/proc/self/ns/net")
    mark = os.environ.pop(_NETNS_MARK, None)
    # Checked before the capability: the re-executed image may have dropped CAP_SYS_ADMIN.
    if mark == here and _interfaces() == ["lo"]:
        return f"new and empty ({here}: loopback only, down)"
    unchanged = "unchanged (needs root with CAP_SYS_ADMIN; the seccomp filter still applies)"
    if mark == f"unchanged {here}":
        return unchanged
    may = _has_cap_sys_admin()
    if not may and before_exec is None:
        return unchanged
    if may:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise NetworkFilterUnavailable(f"unshare(CLONE_NEWNET) failed: {os.strerror(error)}")
        os.environ[_NETNS_MARK] = os.readlink("/proc/self/ns/net")
    else:
        os.environ[_NETNS_MARK] = f"unchanged {here}"
    if before_exec is not None:
        before_exec()
    sys.stdout.flush()
    sys.stderr.flush()
    # The same interpreter and argv, now inside the new namespace (no shell involved).
    os.execv(sys.executable, list(sys.orig_argv))  # noqa: S606
    raise AssertionError("unreachable")  # pragma: no cover - execv does not return


def _interfaces() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


def _has_cap_sys_admin() -> bool:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    except OSError:
        pass
    return False


#: What the air-gapped core keeps when it runs an application as root: the sandbox
#: child (which inherits the bounding set through exec) drops to its own uid and gid
#: (CAP_SETUID, CAP_SETGID), and the core must be able to kill it afterwards (CAP_KILL).
#: Without an application nothing is kept.
APP_CAPABILITIES = frozenset({capabilities.CAP_KILL, capabilities.CAP_SETGID,
                              capabilities.CAP_SETUID})


def drop_capabilities(keep: frozenset[int]) -> tuple[tuple[str, ...] | None, str]:
    """Keep only ``keep`` in every set, bounding included, and set no_new_privs; check
    every thread. Returns (kept names or None when none were held, a note).

    Raises :class:`NetworkFilterUnavailable` if the kernel refuses (fail closed).
    """
    try:
        if os.geteuid() != 0 and capabilities.held() == 0:
            capabilities.set_no_new_privs()  # exec gains none either
            return None, "none held (not root): nothing to drop; no_new_privs set"
        capabilities.drop(keep)
        extra = capabilities.check_dropped(keep)
    except OSError as error:
        raise NetworkFilterUnavailable(f"could not drop capabilities: {error}") from None
    if extra:
        raise NetworkFilterUnavailable(
            "capabilities still held after the drop (a thread started before it?): "
            + "; ".join(extra))
    kept = tuple(capabilities.names(keep))
    but = f" but {', '.join(kept)}" if kept else ""
    return kept, (f"all dropped{but} (effective, permitted, bounding; inheritable and "
                  "ambient empty); no_new_privs set")


def _drop_thread(keep: frozenset[int]) -> None:
    try:
        if os.geteuid() != 0 and capabilities.held() == 0:
            capabilities.set_no_new_privs()  # nothing to drop (see drop_capabilities)
        else:
            capabilities.drop(keep)
    except OSError as error:
        raise NetworkFilterUnavailable(f"could not drop capabilities: {error}") from None


#: Set across the re-execution: what entering the Landlock domain gave (see below).
_SCOPE_MARK = "TINYWARD_AIRGAP_PTRACE_SCOPE"


def _scope_thread() -> None:
    # A kernel without Landlock still runs air-gapped, saying what it lacks (the capability
    # drop still keeps full-capability processes out of reach).
    try:
        os.environ[_SCOPE_MARK] = f"ABI {ptrace_scope.enter_domain()}"
    except OSError as error:
        os.environ[_SCOPE_MARK] = f"unavailable: {error.strerror or error}"


def isolate(*, application: bool = True, unsafe_keep_capabilities: bool = False,
            unsafe_no_ptrace_scope: bool = False) -> AirGap:
    """Everything air-gapped mode puts in force, in order: inherited descriptors closed,
    an empty network namespace (as root), capabilities dropped to what the device needs
    (``APP_CAPABILITIES`` if it runs an ``application``, else none) and a Landlock domain
    that keeps other processes out of ptrace's reach (both before a re-execution, so that
    every thread has them), the seccomp filter. Call it first, before the process opens
    anything or starts a thread.

    The ``unsafe_`` switches are for control tests only: each leaves a way to write other
    processes' memory through ``/proc/PID/mem``.

    Raises :class:`NetworkFilterUnavailable`.
    """
    keep = APP_CAPABILITIES if application else frozenset()

    def before_exec() -> None:
        if unsafe_keep_capabilities:
            capabilities.set_no_new_privs()  # Landlock needs it
        else:
            _drop_thread(keep)
        if not unsafe_no_ptrace_scope:
            _scope_thread()

    closed = close_inherited_fds()
    namespace = enter_empty_network_namespace(before_exec)
    if unsafe_keep_capabilities:
        kept, note = None, "all kept (unsafe_keep_capabilities)"
    else:
        kept, note = drop_capabilities(keep)
    scope = os.environ.pop(_SCOPE_MARK, None)
    if unsafe_no_ptrace_scope:
        scope = "off (unsafe_no_ptrace_scope)"
    elif scope is None:
        raise NetworkFilterUnavailable("the Landlock domain was not entered before re-executing")
    forbid_network()
    return AirGap(closed, namespace, kept, note, scope)


def network_is_forbidden() -> bool:
    """True if this process can create neither an IPv4 nor an IPv6 socket (checked by
    trying, so it reflects the filter actually in force, whoever installed it)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            probe = socket.socket(family, socket.SOCK_DGRAM)
        except PermissionError:
            continue
        except OSError as error:
            if error.errno in (errno.EAFNOSUPPORT, errno.EPERM, errno.EACCES):
                continue  # a kernel without IPv6 cannot use it either
            raise
        probe.close()
        return False
    return True


def enforced_mode() -> str:
    """``"air-gapped"`` if the network is forbidden in this process right now, else
    ``"connected"``: the mode the device may truthfully claim."""
    return "air-gapped" if network_is_forbidden() else "connected"
