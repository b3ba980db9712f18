"""Create and remove the lab's namespaces, bridges and veth pairs (root, iproute2).

Everything is made *inside* lab namespaces (``ip -n``): the switch namespace holds the two
bridges, each host's ``eth0`` is the far end of a veth pair whose near end is a bridge
port. The host's own namespace gets no link, route or address. Removal
(:func:`remove_lab`) kills every process still running in a lab namespace, then deletes
the namespaces, which deletes every link and bridge in them: nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time

from tinyward.lab.testbed.plan import LabExists, LabPlan
from tinyward.link.netns import NamespaceUnavailable

__all__ = ["create_lab", "lab_namespaces", "lab_pids", "ns_command", "remove_lab"]


def _ip(*args: str) -> str:
    # Fixed argv (no shell); `ip` from PATH, where iproute2 installs it (root only).
    done = subprocess.run(["ip", *args], capture_output=True, text=True,
                          timeout=15, check=False)
    if done.returncode != 0:
        raise NamespaceUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()[:200]}")
    return done.stdout


def ns_command(netns: str, argv: list[str]) -> list[str]:
    """``argv`` wrapped to run inside ``netns``."""
    return ["ip", "netns", "exec", netns, *argv]


def lab_namespaces(prefix: str) -> list[str]:
    """The namespaces of the lab ``prefix`` that exist now."""
    if shutil.which("ip") is None:
        return []
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         timeout=15, check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(f"{prefix}-"))


def lab_pids(prefix: str) -> list[int]:
    """Processes running in any namespace of the lab."""
    pids: list[int] = []
    for name in lab_namespaces(prefix):
        out = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                             text=True, timeout=15, check=False).stdout
        pids += [int(p) for p in out.split() if p.isdigit()]
    return sorted(set(pids))


def _sysctl(netns: str, key: str, value: str) -> None:
    done = subprocess.run(ns_command(netns, ["sysctl", "-q", "-w", f"{key}={value}"]),
                          capture_output=True, text=True, timeout=15, check=False)
    if done.returncode != 0:
        raise NamespaceUnavailable(f"sysctl {key} in {netns}: {done.stderr.strip()[:200]}")


def create_lab(plan: LabPlan) -> None:
    """Make every namespace, bridge and veth pair of ``plan``; on any failure remove what
    was made and raise.

    Raises:
        NamespaceUnavailable: not root, no iproute2, or ``ip`` failed.
        LabExists: a namespace of this prefix exists already.
    """
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise NamespaceUnavailable("the lab needs root and iproute2 (network namespaces)")
    if lab_namespaces(plan.prefix):
        names = ", ".join(lab_namespaces(plan.prefix))
        raise LabExists(f"a lab '{plan.prefix}' is up already ({names}); "
                        f"`tinyward lab down --prefix {plan.prefix}` removes it")
    try:
        _build(plan)
    except BaseException:
        remove_lab(plan.prefix)
        raise


def _build(plan: LabPlan) -> None:
    sw = plan.switch
    for name in plan.namespaces:
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")
    for segment in ("lan", "up"):
        bridge = plan.bridge(segment)
        # No STP, no forwarding delay: ports forward as soon as they are up.
        _ip("-n", sw, "link", "add", bridge, "type", "bridge", "stp_state", "0",
            "forward_delay", "0")
        _ip("-n", sw, "link", "set", bridge, "up")
    ports = [(h.netns, h.segment, h.address, h.mac, h.role) for h in plan.hosts]
    ports += [(plan.router, "lan", plan.host("device-1").gateway, "02:77:00:00:01:01", "rt-lan"),
              (plan.router, "up", plan.host("fleet").gateway, "02:77:00:00:02:01", "rt-up")]
    for index, (netns, segment, address, mac, role) in enumerate(ports):
        port = f"{plan.prefix}p{index}"  # the bridge port, in the switch namespace
        inner = "eth0" if not role.startswith("rt-") else role.replace("rt-", "eth-")
        _ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", inner,
            "netns", netns)
        _ip("-n", sw, "link", "set", port, "master", plan.bridge(segment))
        _ip("-n", sw, "link", "set", port, "up")
        _ip("-n", netns, "link", "set", inner, "address", mac)
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", inner)
        _ip("-n", netns, "link", "set", inner, "up")
    for host in plan.hosts:
        _ip("-n", host.netns, "route", "add", "default", "via", host.gateway)
    _sysctl(plan.router, "net.ipv4.ip_forward", "1")


def remove_lab(prefix: str, timeout: float = 10.0) -> list[str]:
    """Kill every process in the lab's namespaces (TERM, then KILL after ``timeout``),
    delete the namespaces; return their names. Idempotent."""
    names = lab_namespaces(prefix)
    pids = lab_pids(prefix)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = lab_pids(prefix)
            if not pids:
                break
            time.sleep(0.1)
        if not pids:
            break
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True,
                       timeout=15, check=False)
    return names
