"""Traffic for on-device detection tests and ``tinyward bench watch``, inside a
:class:`~tinyward.link.netns.DeviceNamespace` only (root).

* :class:`BenignTraffic`: the device (namespace side) sends a small UDP telemetry datagram
  every ``period`` seconds and opens one short TCP exchange per second with the host
  end (100 bytes each way), as a sensor that reports would.
* :func:`port_sweep`: an attacker on the host end of the pair tries TCP connections to
  ``count`` ports of the device's address (closed ports answer with a reset): a
  connect scan, bounded in count and time.
* :func:`record`: the device interface's frames for some seconds, written as a pcap
  (dpkt's writer), for ``tinyward detect train``.

Every address is the veth pair's (10.251.0.0/16); nothing is sent anywhere else.
"""

from __future__ import annotations

import contextlib
import errno
import random
import socket
import threading
import time
from pathlib import Path

from tinyward.link.netns import DeviceNamespace
from tinyward.link.watch_capture import CaptureSocket, socket_in


class BenignTraffic:
    """See the module docstring. Use as a context manager (threads stop at exit)."""

    def __init__(self, ns: DeviceNamespace, period: float = 0.05, seed: int = 1,
                 ports: tuple[int, int] = (5683, 1883)) -> None:
        """``ports``: the host end's UDP sink and TCP server (fixed: a model trained on one
        run's traffic knows these services in the next; below the ephemeral range, as
        the novelty tuple takes the lower port of a conversation as its service)."""
        self.ns, self.period = ns, period
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._udp_sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp_sink.bind((ns.host_address, ports[0]))
        self._tcp = socket.socket()
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.bind((ns.host_address, ports[1]))
        self._tcp.listen(8)
        self._tcp.settimeout(0.2)
        self.sent = 0
        self._threads = [threading.Thread(target=t, daemon=True, name=f"benign-{t.__name__}")
                         for t in (self._serve, self._sink, self._udp_client, self._tcp_client)]

    def __enter__(self) -> BenignTraffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=3)
        self._udp_sink.close()
        self._tcp.close()

    def _sink(self) -> None:
        self._udp_sink.settimeout(0.2)
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self._udp_sink.recv(2048)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except OSError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(1.0)
                conn.recv(200)
                conn.sendall(b"a" * 100)

    def _udp_client(self) -> None:
        sock = socket_in(self.ns.name, socket.AF_INET, socket.SOCK_DGRAM)
        target = self._udp_sink.getsockname()
        with sock:
            while not self._stop.wait(self.period):
                with contextlib.suppress(OSError):
                    sock.sendto(b"t" * self._rng.randint(60, 90), target)
                    self.sent += 1

    def _tcp_client(self) -> None:
        target = self._tcp.getsockname()
        while not self._stop.wait(1.0):
            sock = socket_in(self.ns.name, socket.AF_INET, socket.SOCK_STREAM)
            with sock, contextlib.suppress(OSError):
                sock.settimeout(1.0)
                sock.connect(target)
                sock.sendall(b"r" * 100)
                sock.recv(200)
                self.sent += 1


def port_sweep(address: str, count: int = 200, first_port: int = 1,
               timeout: float = 5.0) -> int:
    """A TCP connect scan of ``count`` ports of ``address`` (non-blocking, all at once,
    then each given until ``timeout`` overall); returns how many answered (open or
    reset)."""
    deadline = time.monotonic() + timeout
    answered = 0
    socks = []
    try:
        for port in range(first_port, first_port + count):
            s = socket.socket()
            s.setblocking(False)
            socks.append(s)
            s.connect_ex((address, port))
        for s in socks:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err in (0, errno.ECONNREFUSED):
                answered += 1
    finally:
        for s in socks:
            s.close()
    return answered


def record(ns: DeviceNamespace, seconds: float, path: Path, limit: int = 200_000) -> int:
    """Write the device interface's frames for ``seconds`` to a pcap; the frame count."""
    import dpkt

    n = 0
    end = time.monotonic() + seconds
    with CaptureSocket(ns.device_if, netns=ns.name) as capture, path.open("wb") as out:
        writer = dpkt.pcap.Writer(out, snaplen=capture.config.snap, linktype=capture.linktype)
        import select

        while time.monotonic() < end and n < limit:
            readable, _, _ = select.select([capture], [], [], 0.1)
            while readable and n < limit:
                frame = capture.read()
                if frame is None:
                    break
                writer.writepkt(frame[0], ts=frame[1])
                n += 1
    return n




# ---- synthetic frames (no network at all) ---------------------------------------------------

DEVICE, GATEWAY, ATTACKER = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2]), bytes([10, 9, 0, 99])


def ethernet_frame(src: bytes, dst: bytes, proto: int, sport: int, dport: int,
                   payload: bytes = b"", flags: int = 0) -> bytes:
    """One Ethernet/IPv4 frame built by dpkt (UDP for proto 17, TCP for 6)."""
    import dpkt

    l4: dpkt.Packet = (dpkt.udp.UDP(sport=sport, dport=dport, data=payload) if proto == 17
                       else dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, data=payload))
    ip = dpkt.ip.IP(src=src, dst=dst, p=proto, data=l4, ttl=64)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800, data=ip))


def telemetry_frames(t0: float, n: int, rng: random.Random) -> list[tuple[float, bytes]]:
    """A sensor's telemetry: a UDP datagram to port 5683 every 50 ms, and its reply."""
    out = []
    for i in range(n):
        t = t0 + i * 0.05 + rng.uniform(0, 0.004)
        out.append((t, ethernet_frame(DEVICE, GATEWAY, 17, 40000, 5683,
                                      b"t" * rng.randint(60, 90))))
        out.append((t + 0.001, ethernet_frame(GATEWAY, DEVICE, 17, 5683, 40000, b"k" * 8)))
    return out


def sweep_frames(t0: float, ports: range) -> list[tuple[float, bytes]]:
    """An attacker's SYNs to many ports of the device, 0.5 ms apart."""
    return [(t0 + k * 0.0005, ethernet_frame(ATTACKER, DEVICE, 6, 50000, p, flags=2))
            for k, p in enumerate(ports)]


def write_pcap(path: Path, frames: list[tuple[float, bytes]]) -> Path:
    import dpkt

    with path.open("wb") as f:
        writer = dpkt.pcap.Writer(f, linktype=1)
        for ts, frame in frames:
            writer.writepkt(frame, ts=ts)
    return path


__all__ = ["BenignTraffic", "ethernet_frame", "port_sweep", "record", "sweep_frames",
           "telemetry_frames", "write_pcap"]
