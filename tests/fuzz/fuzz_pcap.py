"""atheris harness: :func:`tinyward.detect.pcap.read_packets` on a capture file whose
bytes the fuzzer controls (pcap or pcapng, any link type, any IP inside), in both the
plain and the "TCP options removed" view.

Documented outcomes: a list of packets, or :class:`~tinyward.detect.errors.PcapError`
(with the packets read before the problem). Anything else is a crash.
"""

from __future__ import annotations

import io

from tests.fuzz.harness import instrumented, run, workdir

# dpkt is pure Python: coverage inside it guides the fuzzer to the IP and TCP decoders,
# whose exceptions the reader has to catch.
with instrumented(__name__, also=["dpkt"]):
    import dpkt

    from tinyward.detect.errors import PcapError
    from tinyward.detect.pcap import ReadStats, read_packets

CAPTURE = workdir("pcap") / "capture"


def TestOneInput(data: bytes) -> None:  # the name atheris and OSS-Fuzz use
    CAPTURE.write_bytes(data)
    for strip in (False, True):
        stats = ReadStats()
        try:
            packets = read_packets(CAPTURE, strip_tcp_options=strip, stats=stats)
        except PcapError as error:
            assert len(error.partial) <= stats.frames
            continue
        assert len(packets) <= stats.frames


def _ip_packets() -> list[bytes]:
    src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    tcp = dpkt.tcp.TCP(sport=40000, dport=1883, flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK,
                       opts=bytes.fromhex("020405b40101080a0000000100000000"), data=b"\x10\x0c")
    tcp.off = (20 + len(tcp.opts)) // 4
    udp = dpkt.udp.UDP(sport=5353, dport=5353, data=b"q" * 12)
    udp.ulen = 8 + len(udp.data)
    icmp = dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=1, seq=1, data=b"ping"))
    v4 = [dpkt.ip.IP(src=src, dst=dst, p=proto, data=l4, ttl=64)
          for proto, l4 in ((6, tcp), (17, udp), (1, icmp))]
    v6 = dpkt.ip6.IP6(src=b"\xfe\x80" + bytes(13) + b"\x01", dst=b"\xfe\x80" + bytes(13) + b"\x02",
                      nxt=6, hlim=64, data=dpkt.tcp.TCP(sport=1, dport=2, flags=dpkt.tcp.TH_SYN))
    v6.plen = len(bytes(v6.data))
    return [bytes(packet) for packet in (*v4, v6)]


def seeds() -> list[bytes]:
    ips = _ip_packets()
    ethernet = [bytes.fromhex("02000000000a02000000000b") + (b"\x86\xdd" if ip[0] >> 4 == 6
                                                              else b"\x08\x00") + ip
                for ip in ips]
    vlan = [frame[:12] + b"\x81\x00\x00\x07" + frame[12:] for frame in ethernet]
    sll = [bytes.fromhex("00000001000602000000000100000800") + ip for ip in ips[:3]]
    out: list[bytes] = []
    for linktype, frames in ((1, ethernet), (1, vlan), (101, ips), (113, sll), (228, ips[:3])):
        buffer = io.BytesIO()
        writer = dpkt.pcap.Writer(buffer, snaplen=65535, linktype=linktype)
        for number, frame in enumerate(frames):
            writer.writepkt(frame, ts=1_700_000_000 + number / 10)
        out.append(buffer.getvalue())
    for linktype, frames in ((1, ethernet), (113, sll)):
        buffer = io.BytesIO()
        writer = dpkt.pcapng.Writer(buffer, snaplen=65535, linktype=linktype)
        for number, frame in enumerate(frames):
            writer.writepkt(frame, ts=1_700_000_000 + number / 10)
        out.append(buffer.getvalue())
    return out


if __name__ == "__main__":
    run(TestOneInput, seeds)
