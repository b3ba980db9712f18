"""The device under test: an address the user may probe, a description, a device folder.

A probe sends packets only to an address that is allowed (:func:`allowed_address`):

- a loopback address (the device runs on this machine, as in the tests), or
- an address inside a lab network namespace (``netns``: the whole assessment must run in
  that namespace, ``ip netns exec NS tinyward assess run …``, checked by the namespace's
  inode, so its packets cannot leave the lab), or
- an address the user named explicitly with ``--target-address`` (``named=True``): the
  user says they own it.

Everything else is refused with :class:`TargetRefused` before any packet is sent. Only one
host at a time: networks, broadcast, multicast and unspecified addresses are always
refused, and so are host names (a name could resolve to anyone's address).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyward.errors import BadInput

DESCRIPTION_FORMAT = "tinyward-target/1"
PRODUCT_CLASSES = ("ml-sensor", "camera", "hub", "appliance", "wearable", "other")
MAX_PORTS = 1024
_NETNS = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_CONTACT = re.compile(r"(mailto:[^@\s]+@[^@\s]+\.[^@\s]+|https://\S+|[^@\s]+@[^@\s]+\.[^@\s]+)")


class TargetRefused(BadInput):
    """The address may not be probed: not loopback, not in a lab namespace, not named."""


class BadDescription(BadInput):
    """The target description file is malformed: the message names the field."""


def inside_netns(name: str) -> bool:
    """Whether this process runs in the network namespace ``name`` (``ip netns`` names it
    under /run/netns): the same namespace inode as our own."""
    try:
        ours, lab = os.stat("/proc/self/ns/net"), os.stat(f"/run/netns/{name}")
        # Device and inode: an inode number alone may repeat on another file system.
        return (ours.st_dev, ours.st_ino) == (lab.st_dev, lab.st_ino)
    except OSError:
        return False


def allowed_address(address: str, *, named: bool = False, netns: str | None = None) -> str:
    """The address as a canonical IP literal, if it may be probed; else :class:`TargetRefused`.

    ``named``: the user gave it with ``--target-address`` (they own it). ``netns``: the
    probes run inside that lab network namespace.
    """
    text = address.strip()
    if text == "localhost":
        text = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise TargetRefused(
            f"{address!r} is not one IP address (host names and networks are refused: "
            "name one host by its address)") from None
    if ip.is_unspecified or ip.is_multicast or (ip.version == 4 and str(ip) == "255.255.255.255"):
        raise TargetRefused(f"{ip} is not one host")
    if netns is not None and not _NETNS.fullmatch(netns):
        raise TargetRefused(f"{netns!r} is not a network namespace name")
    if netns is not None and not inside_netns(netns):
        # Otherwise the Python probes would send from this namespace, where the same
        # address may lead anywhere.
        raise TargetRefused(f"probes for an address in the lab namespace {netns!r} must run "
                            f"inside it: ip netns exec {netns} tinyward assess run …")
    if ip.is_loopback or netns is not None or named:
        return str(ip)
    raise TargetRefused(
        f"{ip} is not loopback and not inside a lab namespace: probe it only if you own it, "
        "by naming it with --target-address")


@dataclass(frozen=True)
class Description:
    """What the manufacturer declares (ETSI TS 103 701 calls this the ICS/IXIT)."""

    name: str
    vendor: str = ""
    security_contact: str = ""
    support_end: _dt.date | None = None
    product_class: str = "other"


@dataclass(frozen=True)
class Target:
    """What can be probed. Build it with :func:`make_target` (it checks the address)."""

    address: str | None = None
    ports: tuple[int, ...] | None = None  # None: every TCP port
    netns: str | None = None
    device_dir: Path | None = None
    description: Description | None = None
    # A test credential the manufacturer supplies (TS 103 701's IXIT): a client
    # certificate and key, so a listener that demands one can be examined.
    client_cert: tuple[Path, Path] | None = None
    # How to run the device's own client against a server URL ("{server}" in the argv),
    # and a server certificate from the device's own CA for a key it must not accept:
    # both for the pin-mitm probe.
    device_command: tuple[str, ...] | None = None
    mitm_cert: tuple[Path, Path] | None = None
    # A captured request to send twice (the replay probe's ReplaySpec).
    replay: Any = None
    # An HTML form login (the lockout-restart probe's LoginSpec), and the command that
    # restarts the device's process and returns (the manufacturer supplies it).
    login: Any = None
    restart_command: tuple[str, ...] | None = None
    # The fleet server's device port (on ``address``) a tinyward device folder reports to,
    # for the traffic-analysis probe's capture of its uplink.
    uplink_port: int | None = None
    # How to ask the device for an attestation token ("{nonce}" hex, "{out}" a file) and
    # its attestation certificate (default: a tinyward device folder's).
    attest_command: tuple[str, ...] | None = None
    attest_cert: Path | None = None
    notes: tuple[str, ...] = field(default=())
    # The tier-3 probes (leakage, on-device-detection, air-gapped): the device's
    # application manifest; the fleet's report store the device reports to (a SQLite file
    # or a store URL, read only); how to make the device sign a token in its air-gapped
    # mode ("{nonce}", "{out}"); and how to open its local readout (codes on stdin).
    app_manifest: Path | None = None
    fleet_store: str | None = None
    airgap_command: tuple[str, ...] | None = None
    readout_command: tuple[str, ...] | None = None
    # The attestation certificate of the device the air-gap command runs, when it is not
    # the one of ``attest_cert`` / the device folder (e.g. a second device of the same
    # product, since one folder cannot run connected and air-gapped at once).
    airgap_cert: Path | None = None
    # The fleet folder whose store (reports.db) the device reports to: the failure-reporting
    # and outage-recovery probes read what the fleet recorded (read only).
    fleet_dir: Path | None = None
    # Where that fleet server is, when not on ``address`` (a device in a lab namespace
    # reporting to a fleet host there); checked like ``address``.
    uplink_address: str | None = None

    @property
    def uplink(self) -> tuple[str, int] | None:
        """The fleet server the device reports to (address, port), if named."""
        address = self.uplink_address or self.address
        if self.uplink_port is None or address is None:
            return None
        return address, self.uplink_port

    @property
    def name(self) -> str:
        if self.description is not None:
            return self.description.name
        return self.address or (self.device_dir.name if self.device_dir else "unnamed")


def make_target(*, address: str | None = None, named: bool = False,
                ports: tuple[int, ...] | None = None, netns: str | None = None,
                device_dir: Path | None = None,
                description: Description | None = None,
                client_cert: tuple[Path, Path] | None = None,
                device_command: tuple[str, ...] | None = None,
                mitm_cert: tuple[Path, Path] | None = None, replay: Any = None,
                login: Any = None,
                restart_command: tuple[str, ...] | None = None,
                uplink_port: int | None = None,
                attest_command: tuple[str, ...] | None = None,
                attest_cert: Path | None = None, app_manifest: Path | None = None,
                fleet_store: str | None = None,
                airgap_command: tuple[str, ...] | None = None,
                readout_command: tuple[str, ...] | None = None,
                airgap_cert: Path | None = None,
                fleet_dir: Path | None = None,
                uplink_address: str | None = None) -> Target:
    """A checked target. Raises :class:`TargetRefused` or :class:`BadInput`."""
    if address is None and device_dir is None and description is None and \
            device_command is None and app_manifest is None:
        raise BadInput("a target needs an address, a device folder or a description")
    checked = allowed_address(address, named=named, netns=netns) if address is not None else None
    if ports is not None:
        if not ports or len(ports) > MAX_PORTS or not all(1 <= p <= 65535 for p in ports):
            raise BadInput(f"ports must be 1..{MAX_PORTS} numbers in 1..65535")
        ports = tuple(sorted(set(ports)))
    if device_dir is not None and not Path(device_dir).is_dir():
        raise BadInput(f"{device_dir} is not a folder")
    if client_cert is not None and not all(Path(p).is_file() for p in client_cert):
        raise BadInput("the client certificate and key must be files")
    if device_command is not None and (not device_command or
                                       not any("{server}" in p for p in device_command)):
        raise BadInput("the device command must contain {server} where the URL goes")
    if attest_command is not None and not (any("{nonce}" in p for p in attest_command)
                                           and any("{out}" in p for p in attest_command)):
        raise BadInput("the attest command must contain {nonce} and {out}")
    if restart_command is not None and not restart_command:
        raise BadInput("the restart command is empty")
    if app_manifest is not None and not Path(app_manifest).is_file():
        raise BadInput(f"{app_manifest} is not a file")
    if airgap_command is not None and not (any("{nonce}" in p for p in airgap_command)
                                           and any("{out}" in p for p in airgap_command)):
        raise BadInput("the air-gap command must contain {nonce} and {out}")
    if readout_command is not None and not readout_command:
        raise BadInput("the readout command is empty")
    if fleet_dir is not None and not Path(fleet_dir).is_dir():
        raise BadInput(f"{fleet_dir} is not a folder")
    if fleet_store is None and fleet_dir is not None:
        # One fleet, one store: --fleet-dir alone also serves the on-device-detection probe.
        fleet_store = str(Path(fleet_dir) / "reports.db")
    uplink = allowed_address(uplink_address, named=named, netns=netns) \
        if uplink_address is not None else None
    if uplink_port is not None and not 1 <= uplink_port <= 65535:
        raise BadInput("the uplink port must be in 1..65535")
    return Target(checked, ports, netns, Path(device_dir) if device_dir else None, description,
                  client_cert, device_command, mitm_cert, replay, login, restart_command,
                  uplink_port, attest_command, attest_cert,
                  app_manifest=Path(app_manifest) if app_manifest else None,
                  fleet_store=fleet_store, airgap_command=airgap_command,
                  readout_command=readout_command,
                  airgap_cert=Path(airgap_cert) if airgap_cert else None,
                  fleet_dir=Path(fleet_dir) if fleet_dir else None, uplink_address=uplink)


def parse_ports(text: str) -> tuple[int, ...]:
    """``"22,80,8000-8010"`` as port numbers. Raises :class:`BadInput`."""
    ports: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                low, high = (int(v) for v in part.split("-", 1))
                if high < low or high - low >= MAX_PORTS:
                    raise ValueError
                ports.extend(range(low, high + 1))
            else:
                ports.append(int(part))
        except ValueError:
            raise BadInput(f"bad port list {text!r} (like 22,80,8000-8010)") from None
    if not ports or len(ports) > MAX_PORTS or not all(1 <= p <= 65535 for p in ports):
        raise BadInput(f"bad port list {text!r}: 1..{MAX_PORTS} ports in 1..65535")
    return tuple(sorted(set(ports)))


_FIELDS = {"format", "name", "vendor", "security_contact", "support_end", "product_class"}


def load_description(text: str) -> Description:
    """A strict loader of the target description (TOML): unknown keys are refused.

    ``format = "tinyward-target/1"``, ``name`` (required), ``vendor``,
    ``security_contact`` (an e-mail address, ``mailto:`` or ``https://`` URL),
    ``support_end`` (a TOML date), ``product_class`` (one of :data:`PRODUCT_CLASSES`).
    """
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise BadDescription(f"target description: not valid TOML ({error})") from None
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise BadDescription(f"target description: unknown field(s) {', '.join(unknown)}")
    if doc.get("format") != DESCRIPTION_FORMAT:
        raise BadDescription(f"target description: format must be {DESCRIPTION_FORMAT!r}")
    for key in ("name", "vendor", "security_contact", "product_class"):
        if key in doc and (not isinstance(doc[key], str) or len(doc[key]) > 200):
            raise BadDescription(f"target description: {key} must be text (<= 200 chars)")
        # A device folder's target.toml is the manufacturer's text, printed to the terminal
        # ("assessing NAME") and into every report: no escape sequences, no bidi overrides.
        if key in doc and any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in doc[key]):
            raise BadDescription(f"target description: {key} holds control characters")
    name = doc.get("name", "")
    if not name.strip():
        raise BadDescription("target description: name is required")
    contact = doc.get("security_contact", "")
    if contact and not _CONTACT.fullmatch(contact):
        raise BadDescription("target description: security_contact must be an e-mail "
                             "address or an https:// URL")
    support_end = doc.get("support_end")
    if support_end is not None and (not isinstance(support_end, _dt.date)
                                    or isinstance(support_end, _dt.datetime)):
        raise BadDescription("target description: support_end must be a date (2030-12-31)")
    product_class = doc.get("product_class", "other")
    if product_class not in PRODUCT_CLASSES:
        raise BadDescription(f"target description: product_class must be one of "
                             f"{', '.join(PRODUCT_CLASSES)}")
    return Description(name, doc.get("vendor", ""), contact, support_end, product_class)


__all__ = ["DESCRIPTION_FORMAT", "PRODUCT_CLASSES", "BadDescription", "Description", "Target",
           "TargetRefused", "allowed_address", "inside_netns", "load_description", "make_target",
           "parse_ports"]
