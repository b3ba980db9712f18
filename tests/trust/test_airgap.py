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


def test_filter_does_not_leak_into_unrelated_processes() -> None:
    """The parent (this test) keeps its network: the filter is per process tree."""
    import socket

    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
