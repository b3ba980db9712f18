"""Red-team variants of the air gap (issue 12, item 9): other ways to make *another*
process send for a compromised core.

The filter refuses ``ptrace`` and ``process_vm_writev`` ("making another process send").
``/proc/PID/mem`` opened for writing does the same with ``open`` and ``write``, which no
seccomp filter can tell from any other file write: a process of the same uid (or root)
overwrites a networked process's memory, and that process sends. :func:`isolate` refuses
it twice over: it drops the core's capabilities (the kernel's ptrace check, which guards
``/proc/PID/mem``, wants the target's permitted capabilities within the caller's, and
CAP_SYS_PTRACE for another uid) and puts the core in a Landlock domain (ptrace scoped to
the core's own children, whatever the uid: the capability drop alone leaves the
CAP_SETUID the app's uid drop needs, and an unprivileged core's own uid). The controls
show each way through with the protection that closes it switched off.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import needs

#: A process outside the filtered tree, holding a buffer; prints its address, waits for a
#: line, then prints what the buffer holds.
VICTIM = textwrap.dedent(
    """
    import ctypes, sys
    buf = ctypes.create_string_buffer(b"idle", 16)
    print(ctypes.addressof(buf), flush=True)
    sys.stdin.readline()
    print(buf.value.decode(), flush=True)
    """
)

#: What ``device run --air-gapped --app`` does first (isolate(), which re-executes this
#: script, inside a new network namespace as root), then the attack, optionally as another
#: uid (argv[4]); argv[3] names the protections switched off for a control.
WRITE_MEM = textwrap.dedent(
    """
    import os, sys
    from tinyward.trust.airgap import isolate
    off = sys.argv[3].split(",")
    isolate(application=True, unsafe_keep_capabilities="capabilities" in off,
            unsafe_no_ptrace_scope="ptrace-scope" in off)
    pid, address, uid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[4])
    try:
        if uid != os.getuid():  # the app's uid drop keeps CAP_SETUID in the core
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        fd = os.open(f"/proc/{pid}/mem", os.O_RDWR)
        os.pwrite(fd, b"SEND\\0", address)
        os.close(fd)
        print("written")
    except OSError as error:
        print("refused", error.errno)
    """
)

SOCKET_BY_PROC = textwrap.dedent(
    """
    import os, sys
    from tinyward.trust.airgap import forbid_network
    forbid_network()
    try:
        fd = os.open(f"/proc/{sys.argv[1]}/fd/{sys.argv[2]}", os.O_RDWR)
        os.write(fd, b"x")
        print("reached")
    except OSError as error:
        print("refused", error.errno)
    """
)


def _write_victim_memory(off: str, uid: int | None = None, core_uid: int | None = None
                         ) -> tuple[subprocess.CompletedProcess[str], str]:
    """A victim outside the air gap (this test's child: root with every capability, or
    ``uid`` with none), and an air-gapped attacker writing its buffer (as ``uid``, after
    a setuid the app's uid drop permits); returns the attacker's output and what the victim
    then holds."""
    as_uid = {} if uid is None else {"user": uid, "group": uid}
    victim = subprocess.Popen([sys.executable, "-c", VICTIM], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, **as_uid)  # type: ignore[call-overload]
    try:
        assert victim.stdout is not None and victim.stdin is not None
        address = victim.stdout.readline().strip()
        core = {} if core_uid is None else {"user": core_uid, "group": core_uid, "cwd": "/"}
        out = subprocess.run([sys.executable, "-c", WRITE_MEM, str(victim.pid), address, off,
                              str(os.getuid() if uid is None else uid)],
                             capture_output=True, text=True, timeout=60, check=False, **core)
        victim.stdin.write("go\n")
        victim.stdin.flush()
        seen = victim.stdout.readline().strip()
    finally:
        victim.kill()
        victim.wait()
    assert out.returncode == 0, out.stderr
    return out, seen


needs_root = needs(os.geteuid() == 0, "a full-capability victim and a uid change need root")
NOBODY = 65534


def test_another_process_memory_written_through_proc_pid_mem_is_refused() -> None:
    """Same uid as the core (root: every capability; not root: none)."""
    out, seen = _write_victim_memory("")
    assert out.stdout.startswith("refused") and seen == "idle", (out.stdout, seen)


def test_control_without_capability_drop_and_ptrace_scope_proc_pid_mem_is_written() -> None:
    out, seen = _write_victim_memory("capabilities,ptrace-scope")
    assert out.stdout.startswith("written") and seen == "SEND", (out.stdout, seen)


@needs_root
def test_an_unprivileged_core_cannot_write_a_same_uid_process_memory() -> None:
    """Core and victim both run as nobody: no capability protects the victim, the
    Landlock domain does."""
    out, seen = _write_victim_memory("", uid=NOBODY, core_uid=NOBODY)
    assert out.stdout.startswith("refused") and seen == "idle", (out.stdout, seen)


@needs_root
def test_control_an_unprivileged_core_without_ptrace_scope_writes_a_same_uid_process() -> None:
    out, seen = _write_victim_memory("ptrace-scope", uid=NOBODY, core_uid=NOBODY)
    assert out.stdout.startswith("written") and seen == "SEND", (out.stdout, seen)


@needs_root
def test_the_capability_drop_alone_keeps_a_full_capability_root_process_out_of_reach() -> None:
    out, seen = _write_victim_memory("ptrace-scope")
    assert out.stdout.startswith("refused") and seen == "idle", (out.stdout, seen)


@needs_root
def test_a_core_that_keeps_cap_setuid_cannot_write_another_uids_process_memory() -> None:
    out, seen = _write_victim_memory("", uid=NOBODY)
    assert out.stdout.startswith("refused") and seen == "idle", (out.stdout, seen)


@needs_root
def test_control_without_ptrace_scope_cap_setuid_reaches_another_uids_process() -> None:
    """Why the Landlock domain is needed beside the capability drop."""
    out, seen = _write_victim_memory("ptrace-scope", uid=NOBODY)
    assert out.stdout.startswith("written") and seen == "SEND", (out.stdout, seen)


def test_a_socket_of_another_process_cannot_be_reopened_through_proc_fd() -> None:
    import os
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listener:
        donor = socket.create_connection(listener.getsockname())
        peer, _ = listener.accept()
        with donor, peer:
            out = subprocess.run([sys.executable, "-c", SOCKET_BY_PROC, str(os.getpid()),
                                  str(donor.fileno())],
                                 capture_output=True, text=True, timeout=60, check=False)
            assert out.returncode == 0, out.stderr
            assert out.stdout.startswith("refused"), out.stdout
            peer.settimeout(0.3)
            with pytest.raises(TimeoutError):
                peer.recv(100)


#: A kernel without Landlock (simulated: enter_domain fails with ENOSYS in both images).
NO_LANDLOCK = textwrap.dedent(
    """
    import errno, json
    from tinyward.trust import airgap, ptrace_scope
    def refuse():
        raise OSError(errno.ENOSYS, "Function not implemented")
    ptrace_scope.enter_domain = refuse
    gap = airgap.isolate(application=False)
    print(json.dumps([gap.describe(), gap.protections()]))
    """
)

#: A kernel that refuses the capability drop (simulated: capset fails with EPERM).
CAPSET_REFUSED = textwrap.dedent(
    """
    import errno
    from tinyward.trust import airgap, capabilities
    def refuse(keep):
        raise OSError(errno.EPERM, "capset: Operation not permitted")
    capabilities.drop = refuse
    try:
        airgap.isolate()
        print("ran")
    except airgap.NetworkFilterUnavailable as error:
        print("refused:", error)
    """
)


def test_without_landlock_the_gap_says_other_processes_stay_reachable() -> None:
    import json

    out = subprocess.run([sys.executable, "-c", NO_LANDLOCK], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    describe, protections = json.loads(out.stdout)
    assert any(line.startswith("other processes: reachable") for line in describe), describe
    assert not any("ptrace" in name for name in protections), protections


@needs_root
def test_a_kernel_that_refuses_the_capability_drop_stops_air_gapped_mode() -> None:
    out = subprocess.run([sys.executable, "-c", CAPSET_REFUSED], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused: could not drop capabilities"), out.stdout
