"""The trusted core's capture socket on its own interface, and the thread that scores it.

:class:`CaptureSocket` is an ``AF_PACKET`` raw socket bound to one interface of the
network namespace the device runs in (``ip netns exec NS tinyward device run --watch
IFACE``): it sees the device's traffic both ways. It needs ``CAP_NET_RAW``; without it,
:class:`CaptureRefused` says so. Bounded: frames are cut to ``snap`` bytes (headers are
all the detector reads), the kernel queue is ``rcvbuf`` bytes (the kernel drops beyond
it, counted by ``PACKET_STATISTICS``), and :class:`NetWatcher` processes at most
``max_packets_per_second`` — a flood costs the device a bounded share of one core, and
the frames it leaves in the queue are dropped by the kernel and counted. The socket is
close-on-exec and never passed to the sandboxed application (its ``close_fds``), whose
seccomp filter refuses ``socket()`` anyway.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

from tinyward.detect.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW
from tinyward.errors import Misuse, TinywardError
from tinyward.link.watch import Incidents, NetScorer

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_TIMESTAMPNS = 35  # also the control message type (SCM_TIMESTAMPNS)
PACKET_OUTGOING = 4
CLONE_NEWNET = 0x40000000
_LINKTYPES = {1: LINKTYPE_ETHERNET, 772: LINKTYPE_ETHERNET,  # ARPHRD_ETHER, _LOOPBACK
              65534: LINKTYPE_RAW}  # ARPHRD_NONE (tun, wireguard): bare IP


class CaptureRefused(TinywardError):
    """The capture socket cannot be opened (no CAP_NET_RAW, no such interface)."""


@dataclass(frozen=True)
class CaptureConfig:
    """Bounds of the capture (see module docstring)."""

    snap: int = 256
    rcvbuf: int = 1 << 20  # bytes asked; Linux doubles it for its bookkeeping
    max_packets_per_second: int = 2000
    batch: int = 64  # frames read, then scored in one call
    poll: float = 0.2  # seconds between checks of the stop flag when idle

    def __post_init__(self) -> None:
        if not (64 <= self.snap <= 65535 and 4096 <= self.rcvbuf <= 1 << 26
                and 1 <= self.max_packets_per_second <= 1_000_000 and 1 <= self.batch <= 4096
                and 0 < self.poll <= 5):
            raise Misuse("CaptureConfig: a bound is out of range")


def socket_in(netns: str | None, family: int = socket.AF_PACKET,
              kind: int = socket.SOCK_RAW, proto: int = -1) -> socket.socket:
    """A socket (default: a packet socket for every protocol) made in the named network
    namespace (``ip netns``'s ``/run/netns/NAME``) or this process's own: a socket stays
    in the namespace it was made in, so a short-lived thread enters the namespace, makes
    it and ends (the rest of the process never changes namespace)."""
    if proto == -1:
        proto = socket.htons(ETH_P_ALL) if family == socket.AF_PACKET else 0
    if netns is None:
        return socket.socket(family, kind, proto)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", netns) or netns in (".", ".."):
        raise CaptureRefused(f"not a network namespace name: {netns!r}")
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_make() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            failed.append(CaptureRefused(f"no network namespace named {netns!r}"))
            return
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                failed.append(PermissionError(ctypes.get_errno(), "setns"))
                return
            made.append(socket.socket(family, kind, proto))
        except BaseException as error:  # noqa: BLE001 (handed to the caller's thread)
            failed.append(error)
        finally:
            os.close(fd)

    thread = threading.Thread(target=enter_and_make, name="tinyward-netns")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


class CaptureSocket:
    """A raw packet socket on ``interface`` of network namespace ``netns`` (default:
    this process's own)."""

    def __init__(self, interface: str, config: CaptureConfig | None = None,
                 netns: str | None = None) -> None:
        self.config = config or CaptureConfig()
        self.interface = interface
        try:
            sock = socket_in(netns)
        except PermissionError:
            raise CaptureRefused(
                f"watching {interface} needs CAP_NET_RAW (run the device as root, or give "
                "the interpreter cap_net_raw); the device did not start") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.rcvbuf)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((interface, ETH_P_ALL))
        except OSError as error:
            sock.close()
            if error.errno in (errno.ENODEV, errno.ENXIO):
                raise CaptureRefused(f"no interface named {interface!r} in this network "
                                     "namespace (see `ip link`)") from None
            raise CaptureRefused(f"cannot capture on {interface}: {error}") from None
        hatype = sock.getsockname()[3]
        if hatype not in _LINKTYPES:
            sock.close()
            raise CaptureRefused(f"{interface}: link type {hatype} is not one the detector "
                                 "reads (Ethernet, loopback, bare IP)")
        sock.setblocking(False)
        self._sock = sock
        self.linktype = _LINKTYPES[hatype]
        self._loopback = hatype == 772
        self.kernel_packets = 0
        self.kernel_drops = 0
        self._ancillary = socket.CMSG_SPACE(16)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> tuple[bytes, float] | None:
        """One frame and its kernel receive time (Unix seconds), or None when none waits."""
        while True:
            try:
                data, ancdata, _flags, address = self._sock.recvmsg(self.config.snap,
                                                                    self._ancillary)
            except (BlockingIOError, InterruptedError):
                return None
            # Loopback shows each packet twice (sent, then received): keep one, as
            # libpcap does.
            if self._loopback and address[2] == PACKET_OUTGOING:
                continue
            ts = time.time()
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    seconds, nanos = struct.unpack("qq", value[:16])
                    ts = seconds + nanos * 1e-9
            return data, ts

    def update_kernel_stats(self) -> None:
        """Add the kernel's counts since the last call (reading resets them)."""
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("II", raw)
        self.kernel_packets += packets
        self.kernel_drops += drops

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class WatchStats:
    """The watcher's own counters (on the device, for people and the bench; not sent)."""

    frames: int = 0
    shed_seconds: int = 0  # seconds in which the packet budget was reached
    cpu_seconds: float = 0.0  # this thread's CPU time processing frames
    errors: int = 0
    last_error: str | None = None
    kernel_drops: int = 0
    incidents: dict[str, int] = field(default_factory=dict)


class NetWatcher:
    """The capture thread of the trusted core: reads the socket, scores, raises incidents."""

    def __init__(self, capture: CaptureSocket, scorer: NetScorer, incidents: Incidents,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capture, self.scorer, self.incidents = capture, scorer, incidents
        self.stats = WatchStats()
        self._clock = clock
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tinyward-watch", daemon=True)

    @classmethod
    def open(cls, interface: str, scorer: NetScorer, incidents: Incidents,
             config: CaptureConfig | None = None, netns: str | None = None) -> NetWatcher:
        """Open the capture socket (raises :class:`CaptureRefused`) and start watching."""
        capture = CaptureSocket(interface, config, netns)
        scorer.linktype = capture.linktype
        watcher = cls(capture, scorer, incidents)
        watcher._thread.start()
        return watcher

    def _run(self) -> None:
        config = self.capture.config
        second, used = -1, 0
        while not self._stop.is_set():
            now = self._clock()
            if int(now) != second:
                second, used = int(now), 0
            if used >= config.max_packets_per_second:
                # Over budget: leave the rest to the kernel queue (dropped there, counted).
                self.stats.shed_seconds += 1
                self._stop.wait(max(0.0, second + 1 - self._clock()))
                continue
            try:
                readable, _, _ = select.select([self.capture], [], [], config.poll)
            except (OSError, ValueError):
                break  # closed under us
            if not readable:
                continue
            used += self.process(min(config.batch, config.max_packets_per_second - used))

    def process(self, limit: int) -> int:
        """Read up to ``limit`` waiting frames, score them, raise incidents; the count of
        frames read (each counts against the packet budget, scored or not)."""
        started = time.thread_time()
        n = 0
        try:
            while n < limit:
                frame = self.capture.read()
                if frame is None:
                    break
                # Counted before scoring: a frame that makes the scorer raise must cost
                # budget too, or a stream of them is read without bound; and it is its own
                # error, not the end of the batch (tests/link/test_watch_attack.py).
                n += 1
                try:
                    self.scorer.feed(*frame)
                except Exception as error:  # noqa: BLE001 (never stop the device)
                    self._error(error)
            for kind, ts in self.scorer.flush():
                self.incidents.alarm(kind, ts)
        except Exception as error:  # noqa: BLE001 (the detector must never stop the device)
            self._error(error)
        self.stats.frames += n
        self.stats.cpu_seconds += time.thread_time() - started
        return n

    def _error(self, error: Exception) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(error).__name__}: {error}"[:200]

    def status(self) -> WatchStats:
        if self._closed:
            return self.stats
        with contextlib.suppress(OSError):
            self.capture.update_kernel_stats()
        self.stats.kernel_drops = self.capture.kernel_drops
        self.stats.incidents = self.incidents.totals()
        return self.stats

    def close(self) -> None:
        """Stop the thread and close the socket (idempotent; the counters stay)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        if not self._closed:
            self.status()  # the kernel's last counts, before the socket goes
            self._closed = True
        self.capture.close()


__all__ = ["CaptureConfig", "CaptureRefused", "CaptureSocket", "NetWatcher", "WatchStats",
           "socket_in"]
