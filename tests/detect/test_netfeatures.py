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
