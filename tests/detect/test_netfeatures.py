"""Network features: bounded state, blind to addresses, ports and link type."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest

from tinyward.detect.netfeatures import N_FEATURES, NetFeatureConfig, NetFeatureExtractor
from tinyward.detect.pcap import Packet, read_packets


@pytest.fixture(scope="module")
def benign(mqtt: Path) -> list[Packet]:
    return read_packets(mqtt / "benign/benign-train.pcap")


def test_one_finite_vector_per_packet(benign: list[Packet]) -> None:
    features = NetFeatureExtractor().transform(benign)
    assert features.shape == (len(benign), N_FEATURES) == (6375, 24)
    assert np.isfinite(features).all()
    # the per-packet size feature is the IP total length, nothing from the link layer
    assert list(features[:, 0]) == [p.size for p in benign]


def _remap(packets: list[Packet], seed: int) -> list[Packet]:
    """The same traffic with every address and port renamed by a random bijection."""
    rng = random.Random(seed)
    addresses = sorted({p.src for p in packets} | {p.dst for p in packets})
    new_addresses = rng.sample(range(1 << 32), len(addresses))
    amap = {a: n.to_bytes(4, "big") for a, n in zip(addresses, new_addresses, strict=True)}
    ports = sorted({p.sport for p in packets} | {p.dport for p in packets})
    pmap = dict(zip(ports, rng.sample(range(1, 65536), len(ports)), strict=True))
    return [
        dataclasses.replace(
            p, src=amap[p.src], dst=amap[p.dst], sport=pmap[p.sport], dport=pmap[p.dport]
        )
        for p in packets
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_renaming_addresses_and_ports_leaves_features_identical(
    benign: list[Packet], seed: int
) -> None:
    reference = NetFeatureExtractor().transform(benign)
    renamed = NetFeatureExtractor().transform(_remap(benign, seed))
    np.testing.assert_array_equal(reference, renamed)


def test_renaming_attack_traffic_too(mqtt: Path) -> None:
    # 764 sockets through a 128-slot table: renaming changes which keys share a set, so
    # features may differ only through eviction order; with tables big enough for every
    # key they must be identical.
    packets = read_packets(mqtt / "bruteforce/bruteforce-test.pcapng")
    big = NetFeatureConfig(host_slots=64, conv_slots=64, socket_slots=4096, ways=64)
    reference = NetFeatureExtractor(big).transform(packets)
    np.testing.assert_array_equal(reference, NetFeatureExtractor(big).transform(_remap(packets, 9)))


def test_state_stays_bounded_under_a_flood_of_new_hosts() -> None:
    extractor = NetFeatureExtractor()
    before = extractor.state_bytes()
    rng = random.Random(0)
    for i in range(20_000):  # 20,000 distinct source hosts and sockets
        extractor.update(
            Packet(
                i * 1e-3,
                4,
                rng.getrandbits(32).to_bytes(4, "big"),
                b"\x0a\x00\x00\x01",
                6,
                rng.randrange(65536),
                1883,
                60,
                20,
                20,
                2,
                20,
            )
        )
    cfg = extractor.config
    assert extractor.state_bytes() == before == 16_648  # float build; host table: 64 directed pairs
    assert (
        len(extractor.hosts.tags) == cfg.host_slots
        and len(extractor.sockets.tags) == cfg.socket_slots
    )
    assert len(extractor.hosts.data) == cfg.host_slots * extractor.hosts.stride
    assert extractor.hosts.occupied() == cfg.host_slots  # full, and evicting
    assert extractor.hosts.evictions > 19_000 and extractor.sockets.evictions > 19_000


def test_copy_scores_a_stream_without_touching_the_trained_state(benign: list[Packet]) -> None:
    trained = NetFeatureExtractor()
    trained.transform(benign[:3000])
    snapshot = list(trained.sockets.data)
    _, first = trained.continue_with(benign[3000:4000])
    _, second = trained.continue_with(benign[3000:4000])
    np.testing.assert_array_equal(first, second)
    assert trained.sockets.data == snapshot


def test_time_running_backwards_is_clamped(benign: list[Packet]) -> None:
    extractor = NetFeatureExtractor()
    extractor.transform(benign[:100])
    rewound = extractor.update(dataclasses.replace(benign[100], ts=benign[0].ts - 1000))
    assert np.isfinite(rewound).all()


def test_bad_config_is_refused() -> None:
    from tinyward.detect.errors import DetectMisuse

    with pytest.raises(DetectMisuse):
        NetFeatureConfig(host_slots=30, ways=4)


# ---- eviction under a burst of one-packet flows (issue 13: the SlowITe mix) ------------

BROKER = bytes((10, 16, 0, 1))


def _pkt(ts: float, src: bytes, dst: bytes, sport: int, dport: int, size: int) -> Packet:
    return Packet(ts, 4, src, dst, 6, sport, dport, size, 20, 20, 0x18, size - 40)


def _clients_that_fit(n: int, attackers: tuple[bytes, ...]) -> list[bytes]:
    """``n`` client addresses whose keys (and the attackers' host pairs) leave at least one
    way free in every set of the default tables: without the burst nothing is evicted.
    (Established flows that fill a whole set compete among themselves, under any rule.)"""
    import zlib

    c = NetFeatureConfig()
    used: dict[tuple[str, int], int] = {}

    def sets(host: bytes, port: int) -> list[tuple[str, int]]:
        a, b = host + port.to_bytes(2, "big"), BROKER + (1883).to_bytes(2, "big")
        keys = [("h", host + BROKER, c.host_slots), ("h", BROKER + host, c.host_slots),
                ("c", min(host, BROKER) + max(host, BROKER), c.conv_slots),
                ("s", min(a, b) + max(a, b) + bytes((6,)), c.socket_slots)]
        return [(t, ((zlib.crc32(k) or 1) % (slots // c.ways))) for t, k, slots in keys]

    for attacker in attackers:
        for key in sets(attacker, 0)[:1] + sets(attacker, 0)[2:3]:
            used[key] = used.get(key, 0) + 1
    chosen: list[bytes] = []
    for last in range(10, 250):
        host = bytes((10, 16, 0, last))
        keys = sets(host, 40_000 + len(chosen))
        if all(used.get(k, 0) + keys.count(k) < c.ways for k in keys):
            for k in keys:
                used[k] = used.get(k, 0) + 1
            chosen.append(host)
            if len(chosen) == n:
                return chosen
    raise AssertionError("no room for the clients")


def established_and_burst(
    start: float = 1_600_000_000.0, clients: int = 8, burst: int = 2755, seed: int = 13
) -> tuple[list[Packet], list[Packet]]:
    """(benign, burst): ``clients`` MQTT clients each keeping one socket to the broker
    (a publish and its reply every ~0.5 s for 60 s, then 60 s more), and a SlowITe-like
    burst in between: ``burst`` one-packet sockets from two other hosts to the broker in
    0.23 s (each a new source port)."""
    rng = random.Random(seed)
    attackers = (bytes((10, 16, 120, 44)), bytes((10, 16, 120, 72)))
    benign = []
    for c, host in enumerate(_clients_that_fit(clients, attackers)):
        port = 40_000 + c
        t = start + rng.random()
        while t < start + 120.0:
            benign.append(_pkt(t, host, BROKER, port, 1883, rng.randrange(60, 200)))
            benign.append(_pkt(t + 0.002, BROKER, host, 1883, port, 52))
            t += rng.uniform(0.3, 0.7)
    flood = [_pkt(start + 60.0 + k * 0.23 / burst, attackers[k % 2], BROKER,
                  1024 + k, 1883, 60) for k in range(burst)]
    return sorted(benign, key=lambda p: p.ts), flood


def _benign_rows(packets: list[Packet], *, unsafe_lru_eviction: bool = False,
                 ) -> tuple[list[list[float]], NetFeatureExtractor]:
    extractor = NetFeatureExtractor(unsafe_lru_eviction=unsafe_lru_eviction)
    rows = [row for p, row in ((p, extractor.update(p)) for p in packets)
            if p.src[2] == 0 and p.dst[2] == 0]  # the benign clients' and broker's packets
    return rows, extractor


def test_attack_burst_of_one_packet_flows_no_longer_evicts_established_flows() -> None:
    """A SlowITe-like burst (2,755 one-packet sockets in 0.23 s, from other hosts) fills
    the 128-slot socket table. With the older least-recently-updated rule (the unsafe
    baseline) it evicts the benign clients' sockets, whose next packets then carry the
    features of a flow with no history (the SlowITe mix: 407 of 410 false alarms in the
    next 60 s). With the least-established rule the burst churns its own one-packet slots:
    every benign packet after it has exactly the features it has without the burst."""
    benign, burst = established_and_burst()
    mixed = sorted(benign + burst, key=lambda p: p.ts)
    quiet, _ = _benign_rows(benign)
    flooded, ex = _benign_rows(mixed)
    assert ex.sockets.evictions > 2000  # the table was under pressure
    assert flooded == quiet
    assert _benign_rows(benign)[1].sockets.evictions == 0  # none without the burst
    unsafe, ex_unsafe = _benign_rows(mixed, unsafe_lru_eviction=True)
    assert ex_unsafe.sockets.evictions > 2000
    after = sum(p.ts < burst[0].ts for p in benign)
    assert len(unsafe) == len(quiet) > after > 100
    assert unsafe[:after] == quiet[:after]  # the same until the burst
    lost = sum(u != q for u, q in zip(unsafe[after:], quiet[after:], strict=True))
    assert lost > (len(quiet) - after) // 2  # history lost (here: every later packet)


def test_both_rules_give_the_same_features_until_a_set_is_full(benign: list[Packet]) -> None:
    """Training features do not change with the rule when no set fills (MQTTset's benign
    capture with the default tables: no eviction)."""
    safe = NetFeatureExtractor()
    rows = safe.transform(benign)
    lru = NetFeatureExtractor(unsafe_lru_eviction=True)
    assert safe.sockets.evictions == safe.convs.evictions == safe.hosts.evictions == 0
    np.testing.assert_array_equal(rows, lru.transform(benign))


def test_a_burst_cannot_evict_a_flow_heavier_than_its_own_slots() -> None:
    """The victim is the lightest slot of the set: a set holding one established flow and
    burst slots always evicts a burst slot."""
    config = NetFeatureConfig(host_slots=4, conv_slots=4, socket_slots=4, ways=4)  # one set
    extractor = NetFeatureExtractor(config)
    a, b = bytes((10, 0, 0, 1)), BROKER
    for k in range(50):
        extractor.update(_pkt(100.0 + k * 0.1, a, b, 5000, 1883, 100))
    tag = extractor.sockets.tags[:]
    for k in range(500):
        extractor.update(_pkt(105.0 + k * 1e-4, bytes((10, 9, 9, 9)), b, 1024 + k, 1883, 60))
    assert extractor.sockets.evictions == 500 - 3
    assert set(tag) - {0} <= set(extractor.sockets.tags)  # the established socket stayed
