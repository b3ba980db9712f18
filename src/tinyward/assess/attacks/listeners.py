"""Is anything listening? The sockets of a device's processes (an nmap scan of its address is
the port-scan probe's :func:`~tinyward.assess.probes.portscan.run_nmap`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psutil


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _proc_listeners(pid: int) -> list[str]:
    """LISTEN TCP sockets of ``pid`` from /proc/PID/net (the process's own namespace)."""
    mine = _socket_inodes(pid)
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and fields[9] in mine:  # 0A = LISTEN
                found.append(f"{table} {fields[1]}")
    return found


def listening_sockets(pids: list[int]) -> list[tuple[int, str]]:
    """Every LISTEN TCP socket (and bound UDP socket) held by these processes and children.

    Two views: psutil, and the process's own /proc/PID/net tables (which also see a
    process inside another network namespace, where psutil's system-wide view does not).
    """
    found: list[tuple[int, str]] = []
    procs: list[psutil.Process] = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs += [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            conns = []
        for conn in conns:
            udp_bound = conn.type == socket.SOCK_DGRAM and conn.laddr
            if conn.status == psutil.CONN_LISTEN or udp_bound:
                found.append((proc.pid, f"{conn.laddr.ip}:{conn.laddr.port}"))
        found += [(proc.pid, entry) for entry in _proc_listeners(proc.pid)]
    return found


def established_connections(pid: int) -> int:
    """How many ESTABLISHED TCP connections ``pid`` holds (from its own /proc/PID/net)."""
    mine = _socket_inodes(pid)
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        count += sum(1 for line in lines
                     if len(f := line.split()) > 9 and f[3] == "01" and f[9] in mine)
    return count
