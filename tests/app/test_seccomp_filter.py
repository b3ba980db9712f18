"""The seccomp allowlist itself, loaded in a forked child, syscall by syscall."""

from __future__ import annotations

import ctypes
import errno
import json
import os

import pyseccomp
import pytest

from tinyward.app import _seccomp

DANGEROUS = {
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "sendto",
    "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "keyctl", "add_key", "request_key", "bpf",
    "setuid", "setgid", "setresuid", "setreuid", "capset", "unshare", "setns", "init_module",
    "finit_module", "kexec_load", "reboot", "perf_event_open", "io_uring_setup",
    "userfaultfd", "personality", "seccomp", "prctl", "chmod", "unlink", "rename", "mknod",
}


def test_no_dangerous_syscall_is_on_the_allowlist():
    assert DANGEROUS.isdisjoint(_seccomp.ALLOWED)


def _in_filtered_child(calls: list[tuple[str, tuple[int, ...]]]) -> dict[str, int]:
    """Fork, load the filter, make each raw syscall, return {name: errno or 0}."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(r)
            flt = _seccomp.build_filter()
            flt.load()
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            out = {}
            for name, args in calls:
                if name == "thread":  # a Python thread: clone3 -> ENOSYS -> clone(CLONE_THREAD)
                    import threading

                    box = []
                    thread = threading.Thread(target=box.append, args=(1,))
                    thread.start()
                    thread.join()
                    out[name] = 0 if box == [1] else -1
                    continue
                nr = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
                ctypes.set_errno(0)
                ret = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
                out[name] = ctypes.get_errno() if ret < 0 else 0
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.slow
def test_dangerous_syscalls_fail_with_eperm_under_the_filter():
    af_inet, sock_stream, af_unix, af_netlink = 2, 1, 1, 16
    calls = [
        ("socket", (af_inet, sock_stream, 0)),
        ("socket", (af_unix, sock_stream, 0)),
        ("socketpair", (af_unix, sock_stream, 0, 0)),
        ("execve", (0, 0, 0)),
        ("ptrace", (0, 0, 0, 0)),  # PTRACE_TRACEME
        ("fork", ()),
        ("mount", (0, 0, 0, 0, 0)),
        ("keyctl", (0, 0, 0, 0, 0)),
        ("bpf", (0, 0, 0)),
        ("setuid", (0,)),
        ("unshare", (0,)),
        ("process_vm_readv", (1, 0, 0, 0, 0, 0)),
        ("kill", (1, 0)),  # signal 0 to init: not itself
    ]
    got = _in_filtered_child([*calls[:1], ("socket", (af_netlink, 3, 0)), *calls[1:]])
    assert got == {name: errno.EPERM for name, _ in calls}, got


@pytest.mark.slow
def test_clone3_answers_enosys_and_threads_still_work():
    got = _in_filtered_child([("clone3", (0, 0)), ("getpid", ()), ("thread", ())])
    assert got == {"clone3": errno.ENOSYS, "getpid": 0, "thread": 0}
