"""Is anything listening? Sockets of the device's processes, and an nmap scan of its address."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import xml.etree.ElementTree as ET
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


def nmap_open_ports(address: str, netns: str | None = None, timeout: float = 120.0
                    ) -> tuple[list[int], str]:
    """Scan every TCP port (1-65535) of ``address`` with nmap; return open ports and a summary.

    ``netns`` runs nmap inside that network namespace. Raises FileNotFoundError without nmap.
    """
    nmap = shutil.which("nmap")
    if nmap is None:
        raise FileNotFoundError("nmap is not installed (scripts/install-system-deps.sh)")
    command = [nmap, "-n", "-Pn", "-sT", "-p-", "-T5", "--max-retries", "1", "-oX", "-", address]
    if netns:
        command = ["ip", "netns", "exec", netns, *command]
    done = subprocess.run(  # noqa: S603 - fixed argv: nmap, our flags, the caller's address
        command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"nmap failed: {done.stderr.strip()[:300]}")
    root = ET.fromstring(done.stdout)  # noqa: S314 - nmap's own output, of a scan we ran
    open_ports = [int(port.get("portid", "0")) for port in root.iter("port")
                  if (state := port.find("state")) is not None and state.get("state") == "open"]
    closed = 0
    for extra in root.iter("extraports"):
        closed += int(extra.get("count", "0"))
    return open_ports, f"{len(open_ports)} open, {closed} closed or filtered of 65535"
