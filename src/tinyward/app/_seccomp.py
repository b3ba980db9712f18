"""The sandbox's seccomp-BPF filter: an allowlist, built with libseccomp (``pyseccomp``).

Default action: fail with EPERM. Allowed: what CPython and numpy need to compute on
frames already in memory — reading and writing open file descriptors, opening files
(which Landlock then confines to read-only beneath a few paths), memory management,
time, futexes, threads, signals to itself. Not allowed, among everything else: socket,
socketpair, connect, bind, listen, accept, execve, execveat, fork/vfork and clone
without CLONE_THREAD (a new process), ptrace, process_vm_readv/writev, kill of another
process, mount, keyctl, bpf, setuid and friends, chroot, perf_event_open, io_uring,
userfaultfd. ``clone3`` answers ENOSYS so glibc falls back to ``clone``, whose flags the
filter can inspect. A foreign syscall ABI (32-bit int 0x80) kills the process.
"""

from __future__ import annotations

import contextlib
import errno
import os

import pyseccomp as seccomp

# Grouped by purpose; names the running kernel does not know are skipped.
ALLOWED = (  # noqa: SIM905 (a grouped string reads better than 90 quoted names)
    # file descriptors already open, and opening files (Landlock decides which)
    "read readv pread64 preadv preadv2 write writev pwrite64 close close_range lseek "
    "fstat stat lstat newfstatat statx fstatfs statfs access faccessat faccessat2 "
    "openat open readlink readlinkat getdents getdents64 fcntl dup dup2 dup3 getcwd "
    "fadvise64 select pselect6 poll ppoll "
    # memory
    "brk mmap munmap mremap mprotect madvise mincore membarrier "
    # time
    "clock_gettime clock_getres clock_nanosleep nanosleep gettimeofday time "
    # threads, futexes and signals to itself
    "futex futex_waitv set_robust_list get_robust_list set_tid_address rseq "
    "sched_yield sched_getaffinity sched_getparam sched_getscheduler getcpu "
    "rt_sigaction rt_sigprocmask rt_sigreturn rt_sigsuspend sigaltstack "
    "exit exit_group restart_syscall "
    # identity queries and limits (read-only)
    "getpid gettid getppid getuid geteuid getgid getegid getresuid getresgid getgroups "
    "uname sysinfo getrlimit getrandom arch_prctl umask"
).split()

_CLONE_THREAD = 0x00010000
_TCGETS = 0x5401
_FIONREAD = 0x541B
_FIOCLEX = 0x5451
_FIONBIO = 0x5421


def _nr(name: str) -> int:
    return int(seccomp.resolve_syscall(seccomp.Arch.NATIVE, name))


def build_filter() -> seccomp.SyscallFilter:
    """Build (do not load) the allowlist filter for this process.

    Raises:
        OSError: libseccomp refused a rule.
    """
    deny = seccomp.ERRNO(errno.EPERM)
    flt = seccomp.SyscallFilter(defaction=deny)
    flt.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    # A binary tree of syscall numbers instead of a linear list: every syscall of the app
    # (two per frame at least) walks this filter. libseccomp < 2.5 refuses it: the linear
    # filter is slower but just as strict.
    with contextlib.suppress(OSError):
        flt.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    for name in ALLOWED:
        if _nr(name) >= 0:
            flt.add_rule(seccomp.ALLOW, name)
    # New threads yes (numpy/BLAS may start some), new processes no.
    flt.add_rule(
        seccomp.ALLOW, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, _CLONE_THREAD)
    )
    if _nr("clone3") >= 0:
        flt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    # Signals only to itself (abort() uses tgkill); the pid is fixed from here on.
    pid = os.getpid()
    flt.add_rule(seccomp.ALLOW, "tgkill", seccomp.Arg(0, seccomp.EQ, pid))
    flt.add_rule(seccomp.ALLOW, "kill", seccomp.Arg(0, seccomp.EQ, pid))
    # getrlimit through prlimit64 only when it sets nothing (new_limit == NULL).
    flt.add_rule(seccomp.ALLOW, "prlimit64", seccomp.Arg(2, seccomp.EQ, 0))
    # ioctl: only the harmless requests Python's io uses (no TIOCSTI and the like).
    for request in (_TCGETS, _FIONREAD, _FIOCLEX, _FIONBIO):
        flt.add_rule(seccomp.ALLOW, "ioctl", seccomp.Arg(1, seccomp.EQ, request))
    return flt


def describe() -> str:
    return f"allowlist of {len(ALLOWED) + 5} syscalls, others EPERM; no socket, exec, fork, ptrace"
