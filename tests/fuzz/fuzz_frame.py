"""atheris harness: one live frame through the trusted core's per-frame path —
:func:`tinyward.detect.pcap.decode_frame` under every link type, whole and cut to the
capture socket's snap (256 B), then the network features of the packet
(:class:`~tinyward.detect.netfeatures.NetFeatureExtractor`, one state across inputs as
the core keeps one) and the novelty hash.

Every byte is the attacker's (a frame on the device's LAN). Documented outcome: a Packet
with fields in their wire ranges, or None (counted). Anything else is a crash: on the
device it would be an exception in the trusted core.
"""

from __future__ import annotations

import math

from tests.fuzz.harness import instrumented, run

with instrumented(__name__, also=["dpkt"]):
    from tests.fuzz.fuzz_pcap import _ip_packets
    from tinyward.detect.netfeatures import NetFeatureExtractor
    from tinyward.detect.novelty import NoveltySet
    from tinyward.detect.pcap import SUPPORTED_LINKTYPES, ReadStats, decode_frame

EXTRACTOR = NetFeatureExtractor()
NOVELTY = NoveltySet(bytes(16), [1, 2, 3])
SNAP = 256
_TIME = [0.0]


def TestOneInput(data: bytes) -> None:  # the name atheris and OSS-Fuzz use
    for linktype in SUPPORTED_LINKTYPES:
        for frame in (data, data[:SNAP]):
            stats = ReadStats()
            packet = decode_frame(_TIME[0], linktype, frame, stats=stats,
                                  strip_tcp_options=linktype == 1)
            if packet is None:
                assert stats.skipped() == 1
                continue
            assert len(packet.src) == len(packet.dst) in (4, 16)
            assert 0 <= packet.size <= 0xFFFF + 40 and 0 <= packet.proto <= 255
            assert 0 <= packet.sport <= 0xFFFF and 0 <= packet.dport <= 0xFFFF
            _TIME[0] += 0.001
            row = EXTRACTOR.update(packet)
            assert len(row) == 24 and all(math.isfinite(x) for x in row)
            NOVELTY.novel([packet])


def seeds() -> list[bytes]:
    ips = _ip_packets()
    eth = [bytes.fromhex("02000000000a02000000000b") + (b"\x86\xdd" if ip[0] >> 4 == 6
                                                         else b"\x08\x00") + ip for ip in ips]
    vlan = [frame[:12] + b"\x81\x00\x00\x07" + frame[12:] for frame in eth]
    return [*ips, *eth, *vlan]


if __name__ == "__main__":
    run(TestOneInput, seeds)
