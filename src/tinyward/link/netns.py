"""A private network namespace for a device under test (root only), and its cleanup.

``DeviceNamespace`` creates a namespace and a veth pair: the host end gets
``10.251.a.b+1/30`` and the namespace end ``10.251.a.b+2/30`` (a /30 picked from the
process ID in 10.251.0.0/16, a private range tinyward uses only for these pairs). The
device runs inside with ``ip netns exec``; the fleet server listens on the host end; a
scanner on the host can probe the device's address, which no other host shares. Nothing is
routed anywhere else, and :meth:`DeviceNamespace.close` deletes both the namespace and the
pair (deleting the namespace deletes its veth end, which deletes the pair).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Self

from tinyward.errors import TinywardError


class NamespaceUnavailable(TinywardError, RuntimeError):
    """Network namespaces cannot be created here (not root, or no iproute2)."""


def _ip(*args: str) -> None:
    # Fixed argv (no shell); `ip` from PATH, where iproute2 installs it (root-only helper).
    done = subprocess.run(["ip", *args], capture_output=True, text=True,  # noqa: S603, S607
                          timeout=15, check=False)
    if done.returncode != 0:
        raise NamespaceUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()[:200]}")


@dataclass
class DeviceNamespace:
    """See the module docstring. Use as a context manager."""

    name: str
    host_if: str
    device_if: str
    host_address: str
    device_address: str

    @classmethod
    def create(cls, tag: int | None = None) -> DeviceNamespace:
        """Create the namespace and the veth pair. Raises :class:`NamespaceUnavailable`."""
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise NamespaceUnavailable("network namespaces need root and iproute2")
        tag = os.getpid() if tag is None else tag
        block = tag % 16384  # 16384 /30 blocks in 10.251.0.0/16
        third, fourth = divmod(block * 4, 256)
        ns = cls(name=f"tinyward-{tag}", host_if=f"twh{tag % 100000}",
                 device_if=f"twd{tag % 100000}", host_address=f"10.251.{third}.{fourth + 1}",
                 device_address=f"10.251.{third}.{fourth + 2}")
        try:
            _ip("netns", "add", ns.name)
            _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.device_if)
            _ip("link", "set", ns.device_if, "netns", ns.name)
            _ip("addr", "add", f"{ns.host_address}/30", "dev", ns.host_if)
            _ip("link", "set", ns.host_if, "up")
            _ip("-n", ns.name, "addr", "add", f"{ns.device_address}/30", "dev", ns.device_if)
            _ip("-n", ns.name, "link", "set", ns.device_if, "up")
            _ip("-n", ns.name, "link", "set", "lo", "up")
        except NamespaceUnavailable:
            ns.close()
            raise
        return ns

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` wrapped to run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def close(self) -> None:
        """Delete the namespace and the veth pair (idempotent)."""
        for args in (("link", "del", self.host_if), ("netns", "del", self.name)):
            subprocess.run(["ip", *args], capture_output=True,  # noqa: S603, S607 (as in _ip)
                           timeout=15, check=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DeviceNamespace", "NamespaceUnavailable"]
