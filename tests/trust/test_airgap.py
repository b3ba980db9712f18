"""Air-gapped mode: the kernel refuses network sockets in the whole process tree."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import socket, subprocess, sys
    from tinyward.trust.airgap import forbid_network
    forbid_network()
    results = []
    for family, kind in [(socket.AF_INET, socket.SOCK_STREAM), (socket.AF_INET6, socket.SOCK_DGRAM),
                         (socket.AF_PACKET, socket.SOCK_RAW), (socket.AF_NETLINK, socket.SOCK_RAW)]:
        try:
            socket.socket(family, kind).close()
            results.append("opened")
        except PermissionError:
            results.append("refused")
    a, b = socket.socketpair()  # local AF_UNIX pairs stay allowed (pipes to the application)
    grandchild = subprocess.run([sys.executable, "-c",
                                 "import socket; socket.create_connection(('127.0.0.1', 9))"],
                                capture_output=True, text=True)
    results.append("refused" if "PermissionError" in grandchild.stderr else "opened")
    print(" ".join(results))
    """
)


def test_every_network_family_refused_in_process_and_children() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["refused"] * 5


FILTERED_AND_WAITING = textwrap.dedent(
    """
    import socket, sys
    from tinyward.trust.airgap import forbid_network
    forbid_network()
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        print("opened", flush=True)
    except PermissionError:
        print("refused", flush=True)
    sys.stdin.read()  # stay alive, filter on, until the test has looked outside
    """
)

CONNECT = textwrap.dedent(
    """
    import socket, sys
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10).close()
    print("connected")
    """
)


def test_filter_does_not_leak_into_unrelated_processes() -> None:
    """While a filtered process is alive, its parent and an unrelated process still reach
    the network: the filter covers one process tree, not the host or its cgroup."""
    import socket

    filtered = subprocess.Popen([sys.executable, "-c", FILTERED_AND_WAITING],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert filtered.stdout is not None
        # The control: the filter really is on in that process right now.
        assert filtered.stdout.readline().strip() == "refused"
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            # This process (the filtered one's parent) ...
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
            # ... and a process started after the filter went on, outside its tree.
            sibling = subprocess.run([sys.executable, "-c", CONNECT, str(port)],
                                     capture_output=True, text=True, timeout=60, check=False)
            assert sibling.stdout.strip() == "connected", sibling.stderr
        assert filtered.poll() is None, "the filtered process must still be running"
    finally:
        filtered.kill()
        filtered.wait(timeout=30)


# ---- issue 12, item 9: what a compromised core could still reach in air-gapped mode ----

TAKE_SOCKET = textwrap.dedent(
    """
    import ctypes, os, sys
    from tinyward.trust.airgap import forbid_network
    forbid_network()
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(int(sys.argv[1]))
    fd = libc.syscall(438, pidfd, int(sys.argv[2]), 0)  # pidfd_getfd
    if fd < 0:
        print("refused", os.strerror(ctypes.get_errno()))
    else:
        os.write(fd, b"leaked through a socket taken from another process")
        print("sent")
    """
)


def test_socket_taken_from_another_process_with_pidfd_getfd_is_refused() -> None:
    """The donor is this test process: it holds a TCP connection to a local listener."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listener:
        donor = socket.create_connection(listener.getsockname())
        peer, _ = listener.accept()
        with donor, peer:
            out = subprocess.run([sys.executable, "-c", TAKE_SOCKET, str(os.getpid()),
                                  str(donor.fileno())],
                                 capture_output=True, text=True, timeout=60, check=False)
            assert out.returncode == 0, out.stderr
            assert out.stdout.startswith("refused"), out.stdout
            peer.settimeout(0.5)
            with pytest.raises(TimeoutError):
                peer.recv(100)


UNIX_DAEMON = textwrap.dedent(
    """
    import socket, sys
    from tinyward.trust.airgap import forbid_network
    forbid_network()
    outcomes = []
    for make in (lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM),
                 lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)):
        try:
            s = make()
        except PermissionError:
            outcomes.append("refused")
            continue
        try:
            s.connect(sys.argv[1]) if s.type == socket.SOCK_STREAM else s.sendto(b"x", sys.argv[2])
            outcomes.append("reached")
        except PermissionError:
            outcomes.append("refused")
    # A datagram pair could address any named socket; a stream pair cannot.
    try:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.sendto(b"x", sys.argv[2])
        outcomes.append("reached")
    except PermissionError:
        outcomes.append("refused")
    print(" ".join(outcomes))
    """
)


def test_unix_connections_to_local_daemons_are_refused(tmp_path) -> None:
    import socket

    stream_path, dgram_path = str(tmp_path / "daemon.sock"), str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as daemon, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as log:
        daemon.bind(stream_path)
        daemon.listen()
        log.bind(dgram_path)
        out = subprocess.run([sys.executable, "-c", UNIX_DAEMON, stream_path, dgram_path],
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["refused"] * 3
        daemon.setblocking(False)
        with pytest.raises(BlockingIOError):
            daemon.accept()
        log.setblocking(False)
        with pytest.raises(BlockingIOError):
            log.recv(10)


OTHER_PROCESSES = textwrap.dedent(
    """
    import ctypes, os, sys
    from tinyward.trust.airgap import forbid_network
    forbid_network()
    libc = ctypes.CDLL(None, use_errno=True)
    out = []
    for name, nr, args in (("ptrace", 101, (16, int(sys.argv[1]), 0, 0)),  # PTRACE_ATTACH
                           ("process_vm_writev", 311, (int(sys.argv[1]), 0, 0, 0, 0, 0))):
        result = libc.syscall(nr, *args)
        out.append("refused" if result < 0 and ctypes.get_errno() == 1 else f"{name} allowed")
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)  # joining any namespace is refused
    out.append("refused" if libc.setns(fd, 0x40000000) != 0 and ctypes.get_errno() == 1
               else "setns allowed")
    print(" ".join(out))
    """
)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall numbers of x86-64")
def test_other_processes_and_the_host_namespace_are_out_of_reach() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        out = subprocess.run([sys.executable, "-c", OTHER_PROCESSES, str(sleeper.pid)],
                             capture_output=True, text=True, timeout=60, check=False)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["refused"] * 3
