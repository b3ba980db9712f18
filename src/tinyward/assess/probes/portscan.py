"""port-scan (live): nmap's TCP connect scan of the target; any open port fails C-SURF-1.

Only a scan of every TCP port (1-65535) can pass the requirement: a scan of the ports the
user named can find an open port (a fail) but cannot show that none is open (not-tested).
UDP is not scanned (it needs raw sockets); the evidence says so.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.target import Target
from tinyward.errors import BadInput

NAME = "port-scan"
ALL_PORTS = 65535


class BadScan(BadInput):
    """nmap failed, or its XML output could not be read."""


@dataclass(frozen=True)
class Scan:
    open_ports: tuple[int, ...]
    scanned: int  # how many ports nmap says it scanned
    host_up: bool


def parse_nmap_xml(text: str) -> Scan:
    """The open TCP ports and the number of ports scanned, from ``nmap -oX -`` (pure)."""
    try:
        root = ET.fromstring(text)  # noqa: S314 - nmap's output of a scan we ran
    except ET.ParseError as error:
        raise BadScan(f"nmap output is not XML ({error})") from None
    if root.tag != "nmaprun":
        raise BadScan("nmap output has no <nmaprun>")
    scanned = sum(int(info.get("numservices", "0")) for info in root.iter("scaninfo")
                  if info.get("protocol") == "tcp")
    open_ports = sorted({int(port.get("portid", "0")) for port in root.iter("port")
                         if port.get("protocol", "tcp") == "tcp"
                         and (state := port.find("state")) is not None
                         and state.get("state") == "open"})
    host_up = any(status.get("state") == "up" for status in root.iter("status"))
    return Scan(tuple(open_ports), scanned, host_up)


def verdict(scan: Scan, address: str, context: Context) -> list[Evidence]:
    """Any open port: fail. None open of all 65535: pass. None open of fewer: not-tested."""
    if not scan.host_up:
        return for_all(context, NAME, "not-tested", "live",
                       f"nmap found {address} down or unreachable: nothing established")
    if scan.open_ports:
        ports = ", ".join(str(p) for p in scan.open_ports)
        return for_all(context, NAME, "fail", "live",
                       f"{len(scan.open_ports)} open TCP port(s) on {address}: {ports} "
                       f"(nmap connect scan of {scan.scanned} ports)",
                       f"tcp://{address}:{scan.open_ports[0]}")
    if scan.scanned < ALL_PORTS:
        return for_all(context, NAME, "not-tested", "live",
                       f"no open port among the {scan.scanned} TCP ports scanned on {address};"
                       " only a scan of all 65535 can show that none listens")
    return for_all(context, NAME, "pass", "live",
                   f"nmap connect scan of all 65535 TCP ports on {address}: none open "
                   "(UDP not scanned)")


def nmap_command(address: str, ports: tuple[int, ...] | None, seconds: float) -> list[str]:
    nmap = shutil.which("nmap")
    if nmap is None:
        raise FileNotFoundError("nmap is not installed (scripts/install-system-deps.sh)")
    port_arg = "-p-" if ports is None else "-p" + ",".join(str(p) for p in ports)
    # With a lab namespace the whole assessment already runs inside it (target.py checks).
    return [nmap, "-n", "-Pn", "-sT", port_arg, "-T4", "--max-retries", "1",
            "--host-timeout", f"{max(1, int(seconds))}s", "-oX", "-", address]


def run_nmap(address: str, ports: tuple[int, ...] | None, seconds: float) -> Scan:
    """Scan ``address`` (every TCP port, or ``ports``) in about ``seconds``; the probe and
    ``tinyward demo`` share it.

    Raises FileNotFoundError without nmap, subprocess.TimeoutExpired when it runs 10 s past
    ``seconds``, BadScan when it fails or its output cannot be read.
    """
    done = subprocess.run(nmap_command(address, ports, seconds),  # noqa: S603 - fixed argv, checked address
                          capture_output=True, text=True, check=False, timeout=seconds + 10)
    if done.returncode != 0:
        raise BadScan(f"nmap failed: {done.stderr.strip()[:200]}")
    return parse_nmap_xml(done.stdout)


class PortScan:
    name = NAME
    kind = "live"

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        if target.address is None:
            return for_all(context, NAME, "not-tested", "live", "no address to scan")
        try:
            scan = run_nmap(target.address, target.ports, budget.left())
        except (FileNotFoundError, subprocess.TimeoutExpired) as error:
            return for_all(context, NAME, "not-tested", "live", f"nmap did not run: {error}")
        except BadScan as error:
            return for_all(context, NAME, "not-tested", "live", str(error))
        context.open_ports = scan.open_ports
        return verdict(scan, target.address, context)


__all__ = ["BadScan", "PortScan", "Scan", "nmap_command", "parse_nmap_xml", "run_nmap",
           "verdict"]
