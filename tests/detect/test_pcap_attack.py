"""Red team of the frame decoder the trusted core runs on every frame of its LAN
(``tinyward.detect.pcap.decode_frame``; the capture reader uses the same code).

Every byte of a frame is the attacker's. The decoder's contract: a :class:`Packet`
whose fields stay in their wire ranges, or ``None`` (counted in ``ReadStats``); never an
exception, never unbounded work. Hand-made attacks first (IP-in-IP and ICMP nesting,
IHL and length fields that lie, IPv6 extension-header chains, VLAN stacks, fragments,
zero-length and 65,535-byte frames), then hypothesis over arbitrary bytes and over
structure-aware mutations of real frames.
"""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyward.detect.errors import PcapError
from tinyward.detect.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    SUPPORTED_LINKTYPES,
    Packet,
    ReadStats,
    decode_frame,
    read_packets,
)

SRC4, DST4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
SRC6, DST6 = b"\xfe\x80" + bytes(13) + b"\x01", b"\xfe\x80" + bytes(13) + b"\x02"
ETH4 = bytes.fromhex("02000000000a02000000000b0800")
ETH6 = bytes.fromhex("02000000000a02000000000b86dd")


def _v4(payload: bytes, proto: int, *, ihl: int = 5, total: int | None = None,
        frag: int = 0, options: bytes = b"") -> bytes:
    total = 4 * ihl + len(payload) if total is None else total
    return (bytes([0x40 | ihl, 0]) + struct.pack(">HHHBBH", min(total, 0xFFFF), 1, frag, 64,
                                                 proto, 0) + SRC4 + DST4 + options + payload)


def _v6(payload: bytes, nxt: int, plen: int | None = None) -> bytes:
    plen = len(payload) if plen is None else plen
    return (bytes([0x60, 0, 0, 0]) + struct.pack(">HBB", min(plen, 0xFFFF), nxt, 64)
            + SRC6 + DST6 + payload)


def _tcp(sport: int = 40000, dport: int = 1883, off: int = 5, flags: int = 2) -> bytes:
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, off << 4, flags, 512, 0, 0)


def _udp(sport: int = 5353, dport: int = 5353, ulen: int = 8) -> bytes:
    return struct.pack(">HHHH", sport, dport, ulen, 0)


def _check(packet: Packet | None, frame: bytes) -> None:
    """The decoder's contract on one result."""
    if packet is None:
        return
    assert packet.version in (4, 6)
    assert len(packet.src) == len(packet.dst) == (4 if packet.version == 4 else 16)
    assert 0 <= packet.proto <= 255
    assert 0 <= packet.sport <= 0xFFFF and 0 <= packet.dport <= 0xFFFF
    assert 0 <= packet.tcp_flags <= 0xFFF
    assert 0 <= packet.size <= 0xFFFF + 40  # IPv6: 40-byte header + 16-bit payload length
    assert 0 <= packet.payload_len <= packet.size or packet.size < packet.ip_header_len
    assert (packet.ip_header_len == 40 if packet.version == 6
            else 20 <= packet.ip_header_len <= 60 and packet.ip_header_len % 4 == 0)
    assert 0 <= packet.l4_header_len <= 60


def _decode_all_linktypes(ip_or_frame: bytes, *, raw_ip: bool) -> None:
    """Decode ``ip_or_frame`` under every link type (as an IP packet wrapped in each link
    header when ``raw_ip``), in both views; nothing may raise."""
    if raw_ip:
        version = ip_or_frame[0] >> 4 if ip_or_frame else 4
        ethertype = b"\x86\xdd" if version == 6 else b"\x08\x00"
        frames = [
            (LINKTYPE_ETHERNET, ETH4[:12] + ethertype + ip_or_frame),
            (LINKTYPE_ETHERNET, ETH4[:12] + b"\x81\x00\x00\x07" + ethertype + ip_or_frame),
            (LINKTYPE_RAW, ip_or_frame),
            (LINKTYPE_IPV4, ip_or_frame),
            (LINKTYPE_IPV6, ip_or_frame),
            (LINKTYPE_LINUX_SLL, bytes.fromhex("000000010006020000000001") + b"\x00\x00"
             + ethertype + ip_or_frame),
            (LINKTYPE_LINUX_SLL2, ethertype + bytes(18) + ip_or_frame),
        ]
    else:
        frames = [(linktype, ip_or_frame) for linktype in SUPPORTED_LINKTYPES]
    for linktype, frame in frames:
        for strip in (False, True):
            stats = ReadStats()
            packet = decode_frame(1.0, linktype, frame, strip_tcp_options=strip, stats=stats)
            _check(packet, frame)
            assert (packet is None) == (stats.skipped() == 1)


# ---------------------------------------------------------------- hand-made attacks


def _nested_v4(depth: int) -> bytes:
    ip = _v4(_tcp(), 6)
    for _ in range(depth):
        ip = _v4(ip, 4)  # IP-in-IP: dpkt decodes each level by recursion
    return ip[:0xFFFF]


def _nested_v6(depth: int) -> bytes:
    ip = _v6(_tcp(), 6)
    for _ in range(depth):
        ip = _v6(ip, 41)  # IPv6-in-IPv6
    return ip[:0xFFFF]


def _nested_icmp(depth: int) -> bytes:
    # An ICMP destination-unreachable quotes an IP packet, which may be ICMP again.
    ip = _v4(_udp(), 17)
    for _ in range(depth):
        ip = _v4(bytes([3, 1, 0, 0, 0, 0, 0, 0]) + ip, 1)
    return ip[:0xFFFF]


@pytest.mark.parametrize("make,depth", [(_nested_v4, 3000), (_nested_v6, 1600),
                                        (_nested_icmp, 2300)],
                         ids=["ip-in-ip", "ipv6-in-ipv6", "icmp-quoting-icmp"])
def test_attack_nested_tunnels_do_not_exhaust_the_decoders_recursion(make, depth) -> None:
    """Found here: dpkt decodes each tunnel level by recursion, so a 60 KB frame of
    IP-in-IP (or ICMP errors quoting ICMP errors) raised RecursionError out of the
    decoder — out of ``detect train``/``score`` on a capture, and (with a large snap) out
    of the core's scorer. Only the outer headers are features: the decoder hands dpkt a
    bounded prefix, and the outer packet still comes out."""
    ip = make(depth)
    assert len(ip) > 50_000
    stats = ReadStats()
    packet = decode_frame(1.0, LINKTYPE_ETHERNET,
                          (ETH6 if ip[0] >> 4 == 6 else ETH4) + ip, stats=stats)
    assert packet is not None, stats.skipped_text()
    assert packet.proto == {4: 4, 6: 41}.get(ip[0] >> 4 if make is not _nested_icmp else 0, 1)
    assert packet.size == len(ip)
    _decode_all_linktypes(ip, raw_ip=True)


def test_attack_nested_tunnels_in_a_capture_file_are_read_not_a_crash(tmp_path: Path) -> None:
    """The same frames in a pcap file (``detect train`` on a capture an attacker
    injected into): read as packets, never RecursionError."""
    path = tmp_path / "nested.pcap"
    with path.open("wb") as f:
        writer = dpkt.pcap.Writer(f, snaplen=262_144, linktype=LINKTYPE_ETHERNET)
        for n, ip in enumerate((_nested_v4(3000), _nested_v6(1600), _nested_icmp(2300))):
            writer.writepkt((ETH6 if ip[0] >> 4 == 6 else ETH4) + ip, ts=1.0 + n)
    assert [p.proto for p in read_packets(path)] == [4, 41, 1]


def test_nested_tunnels_keep_their_outer_headers_whatever_the_snap() -> None:
    """The bounded prefix changes nothing the features read: a tunnelled TCP packet
    decodes to the same Packet cut at the core's snap (256 B) or whole."""
    ip = _nested_v4(40)
    whole = decode_frame(1.0, LINKTYPE_ETHERNET, ETH4 + ip)
    snapped = decode_frame(1.0, LINKTYPE_ETHERNET, (ETH4 + ip)[:256])
    assert whole == snapped and whole is not None and whole.size == len(ip)


@pytest.mark.parametrize("ihl", range(0, 16))
@pytest.mark.parametrize("total", [0, 1, 19, 20, 24, 40, 59, 60, 1500, 0xFFFF])
def test_attack_ipv4_header_and_total_lengths_that_lie(ihl: int, total: int) -> None:
    """IHL below 5 or past the frame, a total length of 0 (TSO), below the header, or
    65,535 on a short frame: a Packet with sane fields or a counted skip."""
    ip = _v4(_tcp(off=15), 6, ihl=5, total=total)
    ip = bytes([0x40 | ihl]) + ip[1:]
    _decode_all_linktypes(ip, raw_ip=True)


@pytest.mark.parametrize("off", range(0, 16))
def test_attack_tcp_data_offset_that_lies(off: int) -> None:
    ip = _v4(_tcp(off=off), 6)
    _decode_all_linktypes(ip, raw_ip=True)
    packet = decode_frame(1.0, LINKTYPE_RAW, ip, strip_tcp_options=True)
    assert packet is None or packet.l4_header_len <= 20 or packet.proto != 6


EXT = {0: "hop-by-hop", 43: "routing", 44: "fragment", 50: "esp", 51: "ah", 60: "dest",
       135: "mobility"}


@pytest.mark.parametrize("count", [1, 2, 100, 8000])
@pytest.mark.parametrize("kind", sorted(EXT))
def test_attack_ipv6_extension_header_chains(kind: int, count: int) -> None:
    """Up to 8,000 chained extension headers of one kind (a 65,535-byte frame), ending in
    TCP: bounded work (each header is at least 8 bytes) and no exception."""
    ext = b"".join(bytes([kind, 0]) + bytes(6) for _ in range(count - 1))
    ext += bytes([6, 0]) + bytes(6) + _tcp()
    _decode_all_linktypes(_v6(ext, kind)[: 0xFFFF + 40], raw_ip=True)


def _dest_opts(nxt: int, pad: int) -> bytes:
    """A destination-options header of ``8 * (pad + 1)`` bytes filled with PadN options
    (Linux skips them and delivers the payload)."""
    room = 8 * (pad + 1) - 2
    options = b""
    while room:
        n = min(room, 257) if room - min(room, 257) != 1 else 200  # never leave 1 byte
        options += bytes([1, n - 2]) + bytes(n - 2)
        room -= n
    return bytes([nxt, pad]) + options


def test_attack_ipv6_atomic_fragment_before_options_is_still_seen() -> None:
    """Found here: a SYN behind an atomic fragment header (offset 0, no more fragments;
    RFC 6946 says receivers process it) followed by destination options made dpkt trip
    (AttributeError) and the frame was skipped as malformed: an IPv6 port scan the core
    never scored. Now the fixed IPv6 header still comes out as a Packet (protocol = the
    first next-header, no ports), which the novelty set has never seen."""
    frag = bytes([60, 0, 0, 0]) + b"\x00\x00\x12\x34"  # next: destination options
    ip = _v6(frag + _dest_opts(6, 0) + _tcp(dport=22), 44)
    for frame in (ETH6 + ip, (ETH6 + ip)[:256]):
        packet = decode_frame(1.0, LINKTYPE_ETHERNET, frame)
        assert packet is not None
        assert (packet.src, packet.dst, packet.version) == (SRC6, DST6, 6)
        assert packet.size == len(ip)


def test_attack_ipv6_options_longer_than_the_snap_are_still_seen() -> None:
    """Found here: the core reads 256 bytes of a frame; a SYN behind 512 bytes of destination
    options is cut inside the options, dpkt needed more data, and the frame was skipped
    as malformed: an IPv6 scan padded this way was invisible to the core (Linux delivers
    the SYN). Now it is a Packet from the fixed header (protocol 60, no ports)."""
    ip = _v6(_dest_opts(6, 63) + _tcp(dport=22), 60)  # 512 bytes of options
    whole = decode_frame(1.0, LINKTYPE_ETHERNET, ETH6 + ip)
    assert whole is not None and whole.proto == 6 and whole.dport == 22  # a capture file
    stats = ReadStats()
    snapped = decode_frame(1.0, LINKTYPE_ETHERNET, (ETH6 + ip)[:256], stats=stats)
    assert snapped is not None, stats.skipped_text()
    assert (snapped.proto, snapped.sport, snapped.dport, snapped.size) == (60, 0, 0, len(ip))


@pytest.mark.parametrize("frag", [0x2000, 0x0001, 0x1FFF, 0x3FFF])
def test_attack_ipv4_fragments(frag: int) -> None:
    """First fragments and later ones (offset > 0: no L4 header to read, ports 0)."""
    packet = decode_frame(1.0, LINKTYPE_RAW, _v4(_tcp(), 6, frag=frag))
    assert packet is not None
    if frag & 0x1FFF:
        assert packet.sport == packet.dport == 0


@pytest.mark.parametrize("tags", [1, 2, 3, 8])
@pytest.mark.parametrize("tpid", [0x8100, 0x88A8, 0x9100])
def test_vlan_stacks_up_to_eight_tags_are_read(tags: int, tpid: int) -> None:
    """Q-in-Q and deeper stacks (real networks use one or two tags) reach the IP header."""
    tag = tpid.to_bytes(2, "big") + b"\x00\x07"
    frame = ETH4[:12] + tag * tags + b"\x08\x00" + _v4(_udp(), 17)
    packet = decode_frame(1.0, LINKTYPE_ETHERNET, frame)
    assert packet is not None and packet.dport == 5353
    stats = ReadStats()
    assert decode_frame(1.0, LINKTYPE_ETHERNET, ETH4[:12] + tag * tags, stats=stats) is None
    assert stats.non_ip == 1


@pytest.mark.parametrize("tags", [9, 100, 16_000, 65_000])
def test_attack_vlan_stacks_beyond_eight_tags_are_not_ip(tags: int) -> None:
    """Found here: the decoder stepped through every VLAN tag of the frame, 4 bytes at a
    time — 10 ms of the core's CPU for one 64 KB frame of 16,000 tags (with a snap that
    large, or a capture file's 256 KB record), linear in the attacker's bytes. No host
    delivers such a frame to IP; beyond 8 tags it is non-IP, so a frame's link-layer work
    is at most 8 steps whatever its length."""
    frame = ETH4[:12] + b"\x81\x00\x00\x07" * tags + b"\x08\x00" + _v4(_udp(), 17)
    stats = ReadStats()
    assert decode_frame(1.0, LINKTYPE_ETHERNET, frame, stats=stats) is None
    assert stats.non_ip == 1


@pytest.mark.parametrize("ethertype", [0x0000, 0x0600, 0x0806, 0x86DD, 0x0800, 0x88CC, 0x8847,
                                       0xFFFF])
@pytest.mark.parametrize("length", [0, 1, 13, 14, 15, 33, 34, 53, 54, 0xFFFF])
def test_attack_odd_ethertypes_and_lengths(ethertype: int, length: int) -> None:
    """Zero-length, header-only, and 65,535-byte frames of odd ethertypes (and the IP
    ethertypes with a wrong or missing IP inside)."""
    frame = (ETH4[:12] + ethertype.to_bytes(2, "big") + b"\x45" * 0xFFFF)[:length]
    _decode_all_linktypes(frame, raw_ip=False)


# ---------------------------------------------------------------- hypothesis

FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.sampled_from(SUPPORTED_LINKTYPES), st.binary(max_size=600))
def test_attack_arbitrary_bytes_are_a_packet_or_a_counted_skip(linktype: int,
                                                               frame: bytes) -> None:
    for strip in (False, True):
        stats = ReadStats()
        packet = decode_frame(1.0, linktype, frame, strip_tcp_options=strip, stats=stats)
        _check(packet, frame)
        assert stats.frames == 0 and stats.skipped() == (packet is None)


@st.composite
def _ip_packets(draw: st.DrawFn) -> bytes:
    """Real-shaped IP packets whose every length field may lie."""
    l4 = draw(st.sampled_from(["tcp", "udp", "icmp", "other", "ip", "ip6"]))
    if l4 == "tcp":
        payload, proto = _tcp(draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)),
                              draw(st.integers(0, 15)), draw(st.integers(0, 255))), 6
        payload += draw(st.binary(max_size=60))
    elif l4 == "udp":
        payload, proto = _udp(ulen=draw(st.integers(0, 0xFFFF))) + draw(st.binary(max_size=40)), 17
    elif l4 == "icmp":
        payload, proto = bytes([draw(st.integers(0, 255)), 0, 0, 0, 0, 0, 0, 0]), 1
        payload += _v4(_udp(), 17)
    elif l4 == "ip":
        payload, proto = _v4(_tcp(), 6), 4
    elif l4 == "ip6":
        payload, proto = _v6(_tcp(), 6), 41
    else:
        payload, proto = draw(st.binary(max_size=80)), draw(st.integers(0, 255))
    if draw(st.booleans()):
        ihl = draw(st.integers(0, 15))
        total = draw(st.one_of(st.none(), st.integers(0, 0xFFFF)))
        options = draw(st.binary(max_size=40))
        ip = _v4(payload, proto, ihl=5, total=total, frag=draw(st.integers(0, 0xFFFF)),
                 options=options)
        ip = bytes([0x40 | ihl]) + ip[1:]
    else:
        chain = draw(st.lists(st.sampled_from(sorted(EXT)), max_size=6))
        exts = b""
        for nxt in [*chain[1:], proto] if chain else []:
            length = draw(st.integers(0, 3))
            exts += bytes([nxt, length]) + draw(st.binary(min_size=6 + 8 * length,
                                                          max_size=6 + 8 * length))
        first = chain[0] if chain else proto
        ip = _v6(exts + payload, first, draw(st.one_of(st.none(), st.integers(0, 0xFFFF))))
    return ip


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    ip = bytearray(draw(_ip_packets()))
    for _ in range(draw(st.integers(0, 4))):  # flip a few bytes
        if ip:
            ip[draw(st.integers(0, len(ip) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, max(len(ip), 0))))
    return bytes(ip if cut is None else ip[:cut])


@FUZZ
@given(_mutated())
def test_attack_mutated_real_frames_under_every_link_type(ip: bytes) -> None:
    _decode_all_linktypes(ip, raw_ip=True)


def test_a_capture_file_of_lying_frames_is_read_or_refused(tmp_path: Path) -> None:
    """The file path uses the same decoder: the hand-made lies in one file are read, with
    only PcapError as a possible refusal."""
    path = tmp_path / "lies.pcap"
    frames = [ETH4 + _v4(_tcp(off=off), 6, ihl=ihl, total=total)
              for off in (0, 4, 15) for ihl in (5, 15) for total in (0, 19, 0xFFFF)]
    frames += [b"", ETH4, ETH4[:12] + b"\x81\x00" * 40]
    with path.open("wb") as f:
        writer = dpkt.pcap.Writer(f, snaplen=262_144, linktype=LINKTYPE_ETHERNET)
        for n, frame in enumerate(frames):
            writer.writepkt(frame, ts=1.0 + n)
    stats = ReadStats()
    try:
        packets = read_packets(path, stats=stats)
    except PcapError:  # pragma: no cover - would be a refusal, also allowed
        return
    assert len(packets) + stats.skipped() == len(frames)
