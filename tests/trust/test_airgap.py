"""Air-gapped mode: the kernel refuses network sockets in the whole process tree."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
    grandchild = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9))"],
                                capture_output=True, text=True)
    results.append("refused" if "PermissionError" in grandchild.stderr else "opened")
    print(" ".join(results))
    """
)


def test_every_network_family_refused_in_process_and_children() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=False)
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
