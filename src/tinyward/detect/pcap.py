"""Read pcap and pcapng captures down to the IP layer.

Why this exists instead of ``dpkt.pcap.Reader``: captures from outside lie. File names
say ``.pcap`` for pcapng files, link layers differ between captures of the same network
(Ethernet vs Linux cooked capture), Ethernet frames carry padding past the IP packet,
and a truncated or corrupted file must give a clear error *with the position* while
keeping what was read. So this module frames the two container formats itself (with
``struct``; they are a few fixed headers), picks the format from the magic number, and
hands each frame's IP packet to dpkt.

Every packet comes out as a :class:`Packet` that no longer says anything about the
link layer: the link type, MAC addresses and padding are gone. Addresses and ports are
kept only so that feature extraction can hash them into table keys.

``strip_tcp_options=True`` gives the "TCP options removed" view: every TCP segment is
seen as if it carried a bare 20-byte header, i.e. the option bytes are subtracted from
the IP total length and the TCP header length. (On the MQTTset captures, the presence of
options alone separates three attacks from benign clients; see the data README.)

Raises: :class:`~tinyward.detect.errors.PcapError` (a :class:`~tinyward.errors.BadInput`)
for anything that is not a readable capture, with the file, packet index and byte offset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import dpkt

from tinyward.detect.errors import PcapError

# Classic pcap magic numbers, as the first four bytes appear in the file.
_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),  # little-endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL2,
)

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ETH_VLAN = (0x8100, 0x88A8, 0x9100)
# Real networks stack one or two VLAN tags; no host delivers a frame of thousands to IP,
# and stepping through them cost the core time linear in the attacker's bytes (10 ms for
# a 64 KB frame; tests/detect/test_pcap_attack.py). Deeper stacks are non-IP.
MAX_VLAN_TAGS = 8
# dpkt decodes tunnels (IP-in-IP, IPv6-in-IPv6, ICMP errors quoting IP …) by recursion, so
# a 64 KB frame of nested tunnels raised RecursionError (tests/detect/test_pcap_attack.py).
# Only the outer headers are features: dpkt gets at most this many bytes of the IP packet
# (the IPv4 header and the largest TCP header take 120; the rest is room for IPv6
# extension headers), which bounds its recursion to a few dozen levels.
DECODE_BYTES = 1024


@dataclass(frozen=True)
class ReadLimits:
    """Limits on lengths taken from an untrusted capture file."""

    max_record_bytes: int = 262_144  # libpcap's largest snap length
    max_block_bytes: int = 16 * 1024 * 1024


@dataclass(slots=True)
class ReadStats:
    """What a read saw besides the packets it yielded."""

    frames: int = 0
    non_ip: int = 0  # ARP, LLDP … (skipped)
    malformed_ip: int = 0  # an IP header dpkt refused (skipped)
    truncated_ip: int = 0  # captured shorter than a whole IP header (skipped)
    snapped: int = 0  # captured shorter than the IP total length (kept, true size used)
    #: IPv6 packets whose extension-header chain dpkt could not follow (cut by the snap,
    #: or a chain it trips over): kept from the fixed header alone (protocol = its next
    #: header, no ports), so that padding a scan with options does not hide it.
    ipv6_header_only: int = 0
    stripped_option_bytes: int = 0
    linktypes: set[int] = field(default_factory=set)
    #: When a list is given: the 1-based frame number (as Wireshark counts) of every
    #: packet yielded, and (frame number, reason) of every frame skipped.
    frame_numbers: list[int] | None = None
    skipped_frames: list[tuple[int, str]] | None = None

    def skipped(self) -> int:
        """Frames read but not yielded (non-IP, malformed or truncated IP)."""
        return self.non_ip + self.malformed_ip + self.truncated_ip

    def skipped_text(self) -> str:
        """e.g. ``"3 frames skipped: 2 non-IP, 0 malformed IP, 1 truncated IP"``."""
        return (f"{self.skipped()} frames skipped: {self.non_ip} non-IP, "
                f"{self.malformed_ip} malformed IP, {self.truncated_ip} truncated IP")


@dataclass(frozen=True, slots=True)
class Packet:
    """One IP packet, link layer removed.

    ``size`` is the IP total length (padding cut; TCP options subtracted in the stripped
    view); ``src``/``dst`` are packed addresses and ``sport``/``dport`` ports (0 for other
    protocols): they are only for hashing into table keys, never feature values.
    """

    ts: float
    version: int
    src: bytes
    dst: bytes
    proto: int
    sport: int
    dport: int
    size: int
    ip_header_len: int
    l4_header_len: int
    tcp_flags: int
    payload_len: int


def capture_format(head: bytes) -> str:
    """Return ``"pcap"`` or ``"pcapng"`` from a file's first four bytes, else ``""``."""
    if head[:4] == _PCAPNG_SHB:
        return "pcapng"
    if head[:4] in _PCAP_MAGICS:
        return "pcap"
    return ""


def read_packets(
    path: Path | str, *, strip_tcp_options: bool = False, stats: ReadStats | None = None
) -> list[Packet]:
    """Read a whole capture into a list.

    Raises:
        PcapError: the file is not a capture, is truncated or corrupted, or uses an
            unsupported link type; ``.partial`` holds the packets read before that.
    """
    packets: list[Packet] = []
    try:
        for packet in iter_packets(path, strip_tcp_options=strip_tcp_options, stats=stats):
            packets.append(packet)
    except PcapError as error:
        error.partial = packets
        raise
    return packets


def iter_packets(
    path: Path | str,
    *,
    strip_tcp_options: bool = False,
    stats: ReadStats | None = None,
    limits: ReadLimits = ReadLimits(),
) -> Iterator[Packet]:
    """Yield the IP packets of a pcap or pcapng file in file order.

    Raises (after yielding everything before the problem):
        PcapError: see :func:`read_packets`.
    """
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    try:
        handle = path.open("rb")
    except OSError as error:
        raise PcapError(path, f"cannot open: {error.strerror}", index=0, offset=0) from error
    with handle:
        head = handle.read(4)
        kind = capture_format(head)
        if kind == "pcap":
            frames = _pcap_frames(path, handle, head, limits)
        elif kind == "pcapng":
            frames = _pcapng_frames(path, handle, head, limits)
        elif not head:
            raise PcapError(path, "the file is empty (a capture starts with a header)",
                            index=0, offset=0)
        else:
            raise PcapError(
                path,
                f"not a pcap or pcapng file (magic bytes {head.hex()})",
                index=0,
                offset=0,
            )
        for index, offset, linktype, ts, frame in frames:
            stats.frames += 1
            if linktype not in stats.linktypes:
                if linktype not in SUPPORTED_LINKTYPES:
                    raise PcapError(
                        path,
                        f"unsupported link type {linktype} (supported: "
                        f"{', '.join(map(str, SUPPORTED_LINKTYPES))})",
                        index=index,
                        offset=offset,
                    )
                stats.linktypes.add(linktype)
            before = (stats.non_ip, stats.truncated_ip)
            packet = _decode(ts, linktype, frame, strip_tcp_options, stats)
            if packet is not None:
                if stats.frame_numbers is not None:
                    stats.frame_numbers.append(index + 1)
                yield packet
            elif stats.skipped_frames is not None:
                reason = ("non-IP" if stats.non_ip > before[0] else
                          "truncated IP" if stats.truncated_ip > before[1] else "malformed IP")
                stats.skipped_frames.append((index + 1, reason))


# ----------------------------------------------------------------------- container framing
# Each framing generator yields (packet index, byte offset of its record, link type,
# timestamp in seconds, frame bytes) and raises PcapError at the first bad record.


def _read_exact(path: Path, handle: BinaryIO, n: int, what: str, index: int, offset: int) -> bytes:
    data = handle.read(n)
    if len(data) != n:
        raise PcapError(
            path,
            f"file truncated inside {what} (needed {n} bytes, found {len(data)})",
            index=index,
            offset=offset,
        )
    return data


def _pcap_frames(
    path: Path, handle: BinaryIO, magic: bytes, limits: ReadLimits
) -> Iterator[tuple[int, int, int, float, bytes]]:
    endian, unit = _PCAP_MAGICS[magic]
    rest = _read_exact(path, handle, 20, "the pcap file header", 0, 4)
    _vmaj, _vmin, _zone, _sigfigs, _snaplen, network = struct.unpack(endian + "HHiIII", rest)
    linktype = network & 0x0FFFFFFF  # the top bits may carry FCS information
    record = struct.Struct(endian + "IIII")
    offset, index = 24, 0
    while True:
        header = handle.read(16)
        if not header:
            return
        if len(header) < 16:
            raise PcapError(
                path,
                f"file truncated inside a record header ({len(header)} of 16 bytes)",
                index=index,
                offset=offset,
            )
        sec, frac, incl_len, _orig_len = record.unpack(header)
        if incl_len > limits.max_record_bytes:
            raise PcapError(
                path,
                f"corrupted record: captured length {incl_len} exceeds "
                f"{limits.max_record_bytes} bytes",
                index=index,
                offset=offset,
            )
        frame = _read_exact(path, handle, incl_len, "a packet record", index, offset)
        yield index, offset, linktype, sec + frac * unit, frame
        offset += 16 + incl_len
        index += 1


def _tsresol_divisor(options: bytes, endian: str) -> tuple[float, int]:
    divisor, tsoffset = 1e6, 0
    pos = 0
    while pos + 4 <= len(options):
        code, length = struct.unpack_from(endian + "HH", options, pos)
        value = options[pos + 4 : pos + 4 + length]
        if code == 0:
            break
        if code == 9 and length >= 1:  # if_tsresol
            resolution = value[0]
            base = 2 if resolution & 0x80 else 10
            divisor = float(base ** (resolution & 0x7F))
        elif code == 14 and length == 8:  # if_tsoffset
            tsoffset = struct.unpack(endian + "q", value)[0]
        pos += 4 + ((length + 3) & ~3)
    return divisor, tsoffset


def _pcapng_frames(
    path: Path, handle: BinaryIO, first: bytes, limits: ReadLimits
) -> Iterator[tuple[int, int, int, float, bytes]]:
    offset, index = 0, 0
    endian = "<"
    interfaces: list[tuple[int, float, int]] = []  # (link type, divisor, offset seconds)
    block_type_raw: bytes | None = first
    while True:
        if block_type_raw is None:
            block_type_raw = handle.read(4)
            if not block_type_raw:
                return
            if len(block_type_raw) < 4:
                raise PcapError(
                    path, "file truncated inside a block header", index=index, offset=offset
                )
        length_raw = _read_exact(path, handle, 4, "a block header", index, offset + 4)
        if block_type_raw == _PCAPNG_SHB:
            bom = _read_exact(path, handle, 4, "a section header", index, offset + 8)
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise PcapError(
                    path, f"bad pcapng byte-order magic {bom.hex()}", index=index, offset=offset + 8
                )
            interfaces = []  # a new section starts a new interface list
            consumed = 12
        else:
            consumed = 8
        (block_type,) = struct.unpack(endian + "I", block_type_raw)
        (block_len,) = struct.unpack(endian + "I", length_raw)
        # A section header's byte-order magic is already read (consumed = 12): its block
        # needs at least those and the trailing length (found by tests/fuzz/fuzz_pcap.py).
        if block_len < consumed + 4 or block_len % 4 or block_len > limits.max_block_bytes:
            raise PcapError(
                path, f"corrupted block: length {block_len}", index=index, offset=offset
            )
        body = _read_exact(path, handle, block_len - consumed, "a block", index, offset)
        (trailer,) = struct.unpack(endian + "I", body[-4:])
        if trailer != block_len:
            raise PcapError(
                path,
                f"corrupted block: trailing length {trailer} != leading {block_len}",
                index=index,
                offset=offset,
            )
        body = body[:-4]
        if block_type == 1:  # interface description
            if len(body) < 8:
                raise PcapError(
                    path, "interface description block too short", index=index, offset=offset
                )
            linktype, _reserved, _snaplen = struct.unpack_from(endian + "HHI", body)
            divisor, tsoffset = _tsresol_divisor(body[8:], endian)
            interfaces.append((linktype, divisor, tsoffset))
        elif block_type in (6, 2):  # enhanced packet / obsolete packet block
            if len(body) < 20:
                raise PcapError(path, "packet block too short", index=index, offset=offset)
            if block_type == 6:
                iface, ts_hi, ts_lo, cap_len, _orig = struct.unpack_from(endian + "IIIII", body)
            else:
                iface, _drops, ts_hi, ts_lo, cap_len, _orig = struct.unpack_from(
                    endian + "HHIIII", body
                )
            if iface >= len(interfaces):
                raise PcapError(
                    path,
                    f"packet names interface {iface}, but only {len(interfaces)} were described",
                    index=index,
                    offset=offset,
                )
            if 20 + cap_len > len(body):
                raise PcapError(
                    path,
                    f"packet block claims {cap_len} captured bytes, more than the block holds",
                    index=index,
                    offset=offset,
                )
            linktype, divisor, tsoffset = interfaces[iface]
            ts = ((ts_hi << 32) | ts_lo) / divisor + tsoffset
            yield index, offset, linktype, ts, body[20 : 20 + cap_len]
            index += 1
        elif block_type == 3:  # simple packet block: no timestamp, so unusable for rates
            raise PcapError(
                path,
                "simple packet blocks carry no timestamp; "
                "re-save the capture with enhanced packet blocks",
                index=index,
                offset=offset,
            )
        # Other blocks (name resolution, statistics, custom) carry nothing we use.
        offset += block_len
        block_type_raw = None


# ----------------------------------------------------------------------- link layer → IP


def _ip_payload(linktype: int, frame: bytes) -> bytes | None:
    """The bytes from the IP header on, or None for a non-IP frame."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        ethertype = int.from_bytes(frame[12:14], "big")
        pos = 14
        while ethertype in _ETH_VLAN and len(frame) >= pos + 4:
            if pos >= 14 + 4 * MAX_VLAN_TAGS:
                return None
            ethertype = int.from_bytes(frame[pos + 2 : pos + 4], "big")
            pos += 4
    elif linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None
        ethertype, pos = int.from_bytes(frame[14:16], "big"), 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None
        ethertype, pos = int.from_bytes(frame[0:2], "big"), 20
    else:  # raw IP (101, 228, 229): the version nibble says which
        return frame if frame and frame[0] >> 4 in (4, 6) else None
    if ethertype not in (_ETH_IPV4, _ETH_IPV6):
        return None
    return frame[pos:]


def _decode(ts: float, linktype: int, frame: bytes, strip: bool, stats: ReadStats) -> Packet | None:
    data = _ip_payload(linktype, frame)
    if not data:
        stats.non_ip += 1
        return None
    version = data[0] >> 4
    header_only = False
    try:
        if version == 4:
            if len(data) < 20:
                stats.truncated_ip += 1
                return None
            total = int.from_bytes(data[2:4], "big")
            # Cut padding, and bound what dpkt decodes: the IPv4 header and the largest
            # TCP header are all the features read (DECODE_BYTES; a tunnelled packet
            # behind them would cost ~4x a plain one to decode, for nothing).
            end = min(total, DECODE_BYTES, (data[0] & 0x0F) * 4 + 60)
            ip: dpkt.ip.IP | dpkt.ip6.IP6 = dpkt.ip.IP(data[:end])
            ip_header_len = ip.hl * 4
            src, dst, proto = ip.src, ip.dst, ip.p
        elif version == 6:
            if len(data) < 40:
                stats.truncated_ip += 1
                return None
            total = 40 + int.from_bytes(data[4:6], "big")
            ip_header_len = 40  # extension headers, if any, count as payload
            try:
                ip = dpkt.ip6.IP6(data[:min(total, DECODE_BYTES)])
                # dpkt sets .p only when the header chain ends in a next-header value; a
                # chain ending in ESP (50) leaves it unset (AttributeError found by
                # tests/fuzz/fuzz_pcap.py), and then the IPv6 header's own next header is
                # used.
                src, dst, proto = ip.src, ip.dst, getattr(ip, "p", ip.nxt)
            # NeedData: a chain cut by the snap (or DECODE_BYTES); AttributeError: dpkt
            # trips over some chains (a fragment header followed by another header).
            # Either way the receiver may still deliver the payload (Linux does), so the
            # fixed header is kept (tests/detect/test_pcap_attack.py): skipping it would
            # let a scan padded with options pass unscored.
            except (dpkt.UnpackError, dpkt.NeedData, struct.error, ValueError,
                    AttributeError):
                header_only = True
                src, dst, proto = data[8:24], data[24:40], data[6]
        else:
            stats.non_ip += 1
            return None
    # AttributeError: dpkt's IPv6 decoder trips over some extension-header chains (a
    # fragment header followed by another header); found by tests/fuzz/fuzz_pcap.py.
    except (dpkt.UnpackError, dpkt.NeedData, struct.error, ValueError, AttributeError):
        stats.malformed_ip += 1
        return None
    if len(data) < total:
        stats.snapped += 1
    sport = dport = flags = 0
    l4_header_len = 0
    l4 = None if header_only else ip.data
    stats.ipv6_header_only += header_only
    if isinstance(l4, dpkt.tcp.TCP):
        sport, dport, flags = l4.sport, l4.dport, l4.flags
        l4_header_len = l4.off * 4
    elif isinstance(l4, dpkt.udp.UDP):
        sport, dport = l4.sport, l4.dport
        l4_header_len = 8
    size = total
    if strip and proto == 6 and l4_header_len > 20:
        stats.stripped_option_bytes += l4_header_len - 20
        size -= l4_header_len - 20
        l4_header_len = 20
    payload = max(size - ip_header_len - l4_header_len, 0)
    return Packet(
        ts,
        version,
        bytes(src),
        bytes(dst),
        proto,
        sport,
        dport,
        size,
        ip_header_len,
        l4_header_len,
        flags,
        payload,
    )


def decode_frame(ts: float, linktype: int, frame: bytes, *, strip_tcp_options: bool = False,
                 stats: ReadStats | None = None) -> Packet | None:
    """One live frame (e.g. from a capture socket) as a :class:`Packet`, exactly as a
    capture file's frame of the same link type would be read; None for a non-IP or
    malformed frame (counted in ``stats``). A frame cut short after its headers (a capture
    snap length) keeps its IP total length as its size."""
    return _decode(ts, linktype, frame, strip_tcp_options, stats or ReadStats())
