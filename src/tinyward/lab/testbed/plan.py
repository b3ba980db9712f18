"""The lab's address plan and its one rule: nothing is ever addressed outside the lab (pure).

Two segments, each a Linux bridge inside the lab's *switch* namespace, joined by a router
namespace::

    LAN 10.203.1.0/24 (bridge <prefix>-lan)     upstream 10.203.2.0/24 (bridge <prefix>-up)
      router     10.203.1.1   ── forwards ──      router      10.203.2.1
      device-i   10.203.1.(10+i)                  fleet       10.203.2.10 (server, DNS, NTP)
      attacker   10.203.1.66 (device's LAN)       upstream    10.203.2.66 (next to the fleet)

No lab namespace has a link to the host's namespace, so a packet cannot leave the lab
whatever its address; on top of that every tool's target is checked against the plan
(:func:`check_target`) before the tool starts. 10.203.0.0/16 is private (RFC 1918) and
used by nothing else in tinyward (device pairs use 10.251.0.0/16).

Names: every namespace is ``<prefix>-<role>``; ``down`` removes exactly the namespaces whose
name starts with ``<prefix>-`` (deleting a namespace deletes its links and bridges).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from tinyward.errors import BadInput, StateError

__all__ = [
    "LAB_NETWORK",
    "Host",
    "LabExists",
    "LabPlan",
    "OutsideLab",
    "check_prefix",
    "check_target",
    "make_plan",
]

#: Every address of the lab lies in here.
LAB_NETWORK = ipaddress.ip_network("10.203.0.0/16")
LAN = ipaddress.ip_network("10.203.1.0/24")
UPSTREAM = ipaddress.ip_network("10.203.2.0/24")
DEFAULT_PREFIX = "twlab"
MAX_DEVICES = 8
_PREFIX = re.compile(r"[a-z][a-z0-9]{1,7}")


class OutsideLab(BadInput):
    """A tool was pointed at an address (or name) that is not a host of the lab."""


class LabExists(StateError):
    """A lab with this prefix is already up (``tinyward lab down`` removes it)."""


@dataclass(frozen=True)
class Host:
    """One namespace: ``role`` (fleet, device-1, attacker-lan …), its namespace name, the
    segment it sits on, its address and the MAC of its ``eth0`` (fixed, so labels can name
    the attacker's frames by MAC as well as by address)."""

    role: str
    netns: str
    segment: str  # "lan" or "up"
    address: str
    mac: str
    gateway: str


@dataclass(frozen=True)
class LabPlan:
    prefix: str
    hosts: tuple[Host, ...]

    @property
    def switch(self) -> str:
        """The namespace holding both bridges (and the captures)."""
        return f"{self.prefix}-switch"

    @property
    def router(self) -> str:
        return f"{self.prefix}-router"

    def bridge(self, segment: str) -> str:
        return f"{self.prefix}-{segment}"

    def host(self, role: str) -> Host:
        for host in self.hosts:
            if host.role == role:
                return host
        raise KeyError(role)

    @property
    def devices(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.role.startswith("device-"))

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.switch, self.router, *(h.netns for h in self.hosts))

    def addresses(self) -> frozenset[str]:
        """Every address a tool may target: hosts and both router interfaces."""
        return frozenset({h.address for h in self.hosts} | {str(LAN[1]), str(UPSTREAM[1])})


def check_prefix(prefix: str) -> str:
    """A prefix is 2-8 lower-case letters or digits, starting with a letter (interface
    names stay within Linux's 15 characters). Raises :class:`BadInput`."""
    if not _PREFIX.fullmatch(prefix):
        raise BadInput(f"lab prefix {prefix[:40]!r}: 2-8 lower-case letters or digits, "
                       "starting with a letter")
    return prefix


def _mac(segment: int, last: int) -> str:
    # Locally administered unicast (02:…), one per (segment, host byte).
    return f"02:77:00:00:{segment:02x}:{last:02x}"


def make_plan(devices: int = 1, prefix: str = DEFAULT_PREFIX) -> LabPlan:
    """The plan for ``devices`` device hosts (1..8). Raises :class:`BadInput`."""
    check_prefix(prefix)
    if not 1 <= devices <= MAX_DEVICES:
        raise BadInput(f"{devices} devices: the lab holds 1 to {MAX_DEVICES}")
    lan_gw, up_gw = str(LAN[1]), str(UPSTREAM[1])
    hosts = [Host("fleet", f"{prefix}-fleet", "up", str(UPSTREAM[10]), _mac(2, 10), up_gw),
             Host("attacker-up", f"{prefix}-atkup", "up", str(UPSTREAM[66]), _mac(2, 66),
                  up_gw),
             Host("attacker-lan", f"{prefix}-atklan", "lan", str(LAN[66]), _mac(1, 66),
                  lan_gw)]
    for i in range(1, devices + 1):
        hosts.append(Host(f"device-{i}", f"{prefix}-dev{i}", "lan", str(LAN[10 + i]),
                          _mac(1, 10 + i), lan_gw))
    return LabPlan(prefix, tuple(hosts))


def check_target(plan: LabPlan, target: str) -> str:
    """``target`` if it is an address of a lab host, else :class:`OutsideLab`.

    Only literal addresses are accepted (a name could resolve anywhere), and only the
    plan's own hosts (not merely anything in 10.203.0.0/16)."""
    try:
        address = ipaddress.ip_address(target)
    except ValueError:
        raise OutsideLab(f"target {target[:60]!r} is not an IP address of the lab; the lab's "
                         "tools take only literal lab addresses") from None
    if address not in LAB_NETWORK or str(address) not in plan.addresses():
        raise OutsideLab(f"target {address} is outside the lab ({LAB_NETWORK}: "
                         f"{', '.join(sorted(plan.addresses()))}); refused")
    return str(address)
