"""Synthetic packet streams with a fixed seed, for network detector tests.

A small plant network: clients 10.0.0.2-4 talk MQTT (TCP 1883) to a broker 10.0.0.1
with fixed message sizes and jittered timing; optionally a host sends rare benign
broadcasts (NetBIOS datagrams to 255.255.255.255:138, mDNS to 224.0.0.251:5353).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from tinyward.detect.pcap import Packet

BROKER = bytes([10, 0, 0, 1])
CLIENTS = tuple(bytes([10, 0, 0, i]) for i in (2, 3, 4))
PRINTER = bytes([10, 0, 0, 5])
TCP, UDP = 6, 17


def packet(ts: float, src: bytes, dst: bytes, proto: int, sport: int, dport: int,
           size: int) -> Packet:
    l4 = 20 if proto == TCP else 8
    return Packet(ts, 4 if len(src) == 4 else 6, src, dst, proto, sport, dport, size,
                  20, l4, 0x18 if proto == TCP else 0, max(0, size - 20 - l4))


def mqtt_exchange(rng: random.Random, t: float, client: bytes, port: int) -> Iterator[Packet]:
    """One publish and its acknowledgement: request 80 bytes, reply 60."""
    yield packet(t, client, BROKER, TCP, port, 1883, 80 + rng.choice((0, 0, 4)))
    yield packet(t + rng.uniform(0.001, 0.003), BROKER, client, TCP, 1883, port, 60)


def plant(
    n_exchanges: int,
    *,
    seed: int = 0,
    start: float = 1_700_000_000.0,
    broadcasts: int = 0,
) -> list[Packet]:
    """Benign traffic: ``n_exchanges`` MQTT exchanges (~20 per second), and
    ``broadcasts`` rare benign broadcast/multicast datagrams spread through it."""
    rng = random.Random(seed)
    ports = {c: 40000 + 10 * i for i, c in enumerate(CLIENTS)}
    out: list[Packet] = []
    t = start
    for _ in range(n_exchanges):
        t += rng.expovariate(20.0)
        client = rng.choice(CLIENTS)
        out += mqtt_exchange(rng, t, client, ports[client])
    span = t - start
    for k in range(broadcasts):
        when = start + span * (k + rng.random()) / max(broadcasts, 1)
        if k % 2:
            out.append(packet(when, PRINTER, bytes([255] * 4), UDP, 138, 138,
                              229 + rng.choice((0, 12))))
        else:
            out.append(packet(when, PRINTER, bytes([224, 0, 0, 251]), UDP, 5353, 5353, 320))
    out.sort(key=lambda p: p.ts)
    return out
