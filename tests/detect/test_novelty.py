"""Peer/service novelty and per-class thresholds (attack first)."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest

from tests.detect._synthetic_net import BROKER, CLIENTS, TCP, packet, plant
from tinyward.detect.errors import DetectMisuse
from tinyward.detect.evaluate import tpr_at_fpr
from tinyward.detect.fusion import CLASSES, FusedNetDetector, packet_class
from tinyward.detect.models import make_detector
from tinyward.detect.netfeatures import NetFeatureExtractor
from tinyward.detect.novelty import Dropped, NoveltySet, keyed_hash, service_tuple
from tinyward.detect.threshold import ThresholdWarning

KEY = bytes(range(16))
NEWCOMER = bytes([10, 0, 0, 7])


@pytest.fixture(scope="module")
def trained() -> tuple[NetFeatureExtractor, np.ndarray, list]:
    packets = plant(8000, seed=1, broadcasts=24)
    extractor = NetFeatureExtractor()
    return extractor, extractor.transform(packets), packets


def _exchanges(client: bytes, port: int, size: int, n: int, seed: int) -> list:
    rng = random.Random(seed)
    out, t = [], 1_700_200_000.0
    for _ in range(n):
        t += rng.expovariate(20.0)
        out.append(packet(t, client, BROKER, TCP, port, 1883, size + rng.choice((0, 0, 4))))
        out.append(packet(t + rng.uniform(0.001, 0.003), BROKER, client, TCP, 1883, port, 60))
    return out


def test_attack_first_a_mimic_on_a_new_peer_is_missed_by_statistics_caught_by_novelty(
    trained: tuple,
) -> None:
    extractor, X, packets = trained
    mimic = _exchanges(NEWCOMER, 40100, 80, 400, seed=3)  # benign sizes and timing
    benign = plant(8000, seed=2, start=1_700_100_000.0, broadcasts=24)
    _, A = extractor.continue_with(mimic)
    _, B = extractor.continue_with(benign)
    base = make_detector("mahalanobis").fit(X, target_fpr=0.001)
    alone = FusedNetDetector(base, novelty=False).fit(X, packets, fit_base=False)
    fused = FusedNetDetector(base, novelty=True, key=KEY).fit(X, packets, fit_base=False)
    assert alone.alarms(A, mimic).mean() < 0.05  # the statistics see nothing wrong
    assert fused.alarms(A, mimic).all()  # every packet of the new peer alarms
    assert not fused.parts(B, benign)[1].any()  # no benign tuple is novel
    # the continuous fused score ranks every novel packet above all benign ones
    assert tpr_at_fpr(fused.score(B, benign), fused.score(A, mimic), 0.001) == 1.0


def test_rare_benign_broadcasts_no_longer_set_the_global_threshold(trained: tuple) -> None:
    # 24 benign broadcasts in 16,000 packets (0.15 %, above the 0.1 % FPR budget) score
    # far above unicast; a subtle attack (publishes 8 bytes larger from a known socket)
    # sits between the two.
    extractor, X, packets = trained
    benign = plant(8000, seed=2, start=1_700_100_000.0, broadcasts=24)
    attack = _exchanges(CLIENTS[1], 40010, 88, 400, seed=4)
    _, B = extractor.continue_with(benign)
    _, A = extractor.continue_with(attack)
    base = make_detector("mahalanobis").fit(X, target_fpr=0.001)
    rates = {}
    for per_class in (False, True):
        detector = FusedNetDetector(base, novelty=False, per_class=per_class)
        detector.fit(X, packets, fit_base=False)
        rates[per_class] = tpr_at_fpr(detector.score(B, benign), detector.score(A, attack), 0.001)
    assert rates[False] < 0.6, rates
    assert rates[True] > 0.95, rates


def test_classes_come_from_destination_and_protocol() -> None:
    def cls(dst: bytes, proto: int = 17, sport: int = 5000, dport: int = 6000) -> str:
        return CLASSES[packet_class(packet(0.0, CLIENTS[0], dst, proto, sport, dport, 100))]

    assert cls(BROKER, TCP) == "unicast-tcp"
    assert cls(BROKER) == "unicast-udp"
    assert cls(b"\xff\xff\xff\xff") == "broadcast"
    assert cls(bytes([224, 0, 0, 251])) == "broadcast"
    assert cls(BROKER, sport=138, dport=138) == "broadcast"  # NetBIOS datagram
    assert cls(b"\xff\x02" + bytes(13) + b"\x02", 58) == "icmp"  # ICMPv6 router solicitation
    assert cls(BROKER, 1) == "icmp"
    assert cls(BROKER, 47) == "other"


def test_capacity_exhaustion_keeps_the_most_frequent_tuples_and_counts_the_rest() -> None:
    packets = []
    for i in range(10):  # tuple i seen 10 + i times
        peer = bytes([10, 0, 1, i])
        packets += [packet(float(j), BROKER, peer, TCP, 1883, 40000 + j, 60) for j in range(10 + i)]
    novelty = NoveltySet.fit(packets, capacity=4, key=KEY)
    assert len(novelty) == 4 and novelty.nbytes() == 4 * 8 + 16
    assert novelty.dropped == Dropped(tuples=6, packets=sum(10 + i for i in range(6)))
    firsts = [next(p for p in packets if p.dst[3] == i) for i in range(10)]
    # the six rarest tuples were left out: they alarm at score time, as documented
    assert novelty.novel(firsts).tolist() == [True] * 6 + [False] * 4
    with pytest.raises(DetectMisuse, match="capacity"):
        NoveltySet(KEY, range(5), capacity=4)


def test_the_hash_is_keyed_blake2s_and_features_stay_address_blind(trained: tuple) -> None:
    _, X, packets = trained
    p = packets[0]
    data = service_tuple(p)
    assert keyed_hash(KEY, data) == int.from_bytes(
        hashlib.blake2s(data, key=KEY, digest_size=8).digest(), "little")
    assert keyed_hash(KEY, data) != keyed_hash(bytes(16), data)
    # both directions of a conversation, and every client port, give one tuple
    reply = next(q for q in packets if q.src == p.dst and q.dst == p.src)
    assert service_tuple(reply) == data
    # the stored set holds no address: not the packed bytes, not their integers
    novelty = NoveltySet.fit(packets, key=KEY)
    text = json.dumps(novelty.to_doc())
    for host in (BROKER, *CLIENTS):
        assert host.hex() not in text and str(int.from_bytes(host, "big")) not in text
    # renaming every address changes the hashes but no feature and no decision
    renamed = [_rename(q) for q in packets]
    assert np.array_equal(NetFeatureExtractor().transform(renamed), X)
    other = NoveltySet.fit(renamed, key=KEY)
    assert set(other.hashes.tolist()).isdisjoint(novelty.hashes.tolist())
    assert not other.novel(renamed).any()


def _rename(p: object) -> object:
    import dataclasses

    def move(a: bytes) -> bytes:
        return bytes([172, 16, a[2], a[3]]) if a[0] == 10 else a

    return dataclasses.replace(p, src=move(p.src), dst=move(p.dst))  # type: ignore[type-var]


def test_novelty_set_round_trips_and_refuses_bad_documents() -> None:
    novelty = NoveltySet.fit(plant(200, seed=5), key=KEY)
    again = NoveltySet.from_doc(json.loads(json.dumps(novelty.to_doc())))
    assert again.key == KEY and np.array_equal(again.hashes, novelty.hashes)
    for bad in ({}, {"key": "00", "capacity": 8, "hashes": []},
                {"key": KEY.hex(), "capacity": 8, "hashes": [-1]},
                {"key": KEY.hex(), "capacity": 8, "hashes": ["1"]},
                {"key": KEY.hex(), "capacity": 1, "hashes": [1, 2]},
                {"key": KEY.hex(), "capacity": 8, "hashes": [1 << 64]}):
        with pytest.raises(DetectMisuse):
            NoveltySet.from_doc(bad)


def test_service_granularity_knows_new_clients_of_known_services_but_not_new_services() -> None:
    packets = plant(500, seed=8)
    by_pair = NoveltySet.fit(packets, key=KEY)
    by_service = NoveltySet.fit(packets, key=KEY, granularity="service")
    assert len(by_service) == 1 and len(by_pair) == 3  # broker:1883; three client pairs
    newcomer = _exchanges(NEWCOMER, 40100, 80, 5, seed=9)
    assert by_pair.novel(newcomer).all() and not by_service.novel(newcomer).any()
    other_port = [packet(1.0, CLIENTS[0], BROKER, TCP, 40000, 8883, 80)]
    assert by_pair.novel(other_port).all() and by_service.novel(other_port).all()
    with pytest.raises(DetectMisuse, match="granularity"):
        NoveltySet.fit(packets, key=KEY, granularity="host")


def _stream_with_new_peers(n: int, new_share: float, seed: int) -> tuple[np.ndarray, list]:
    """n iid Gaussian feature rows (the statistics see nothing of the peers) and one packet
    per row: a known client's publish, or with probability ``new_share`` a packet from a
    peer never seen before (a fresh address each time)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    fresh = rng.random(n) < new_share
    packets = []
    for i in range(n):
        src = (bytes([172, 16 + seed, (i >> 8) & 255, i & 255]) if fresh[i]
               else CLIENTS[i % len(CLIENTS)])
        packets.append(packet(1_700_000_000.0 + i / 100, src, BROKER, TCP, 40000, 1883, 80))
    return X, packets


def test_fused_alarm_keeps_its_total_rate_by_allotting_the_budget() -> None:
    """issue 13: the fused alarm "novel OR score > t" alarms on the union. Peers new to
    the device keep appearing (0.6 % of packets) and the statistics are calibrated for
    1 %: without a shared budget the fused alarm realises 1.54 % on later benign traffic;
    with the novelty rate measured on the later training stretch and subtracted from the
    statistical channel's, 1.12 % (measured; asserted: within 2x, and below 1.3 %)."""
    X, packets = _stream_with_new_peers(40_000, 0.006, seed=0)
    Y, later = _stream_with_new_peers(200_000, 0.006, seed=1)
    rates = {}
    for split in (False, True):
        base = make_detector("mahalanobis").fit(X, target_fpr=0.01)
        fused = FusedNetDetector(base, novelty=True, per_class=False, key=KEY,
                                 split_budget=split).fit(X, packets, target_fpr=0.01,
                                                         fit_base=False)
        rates[split] = float(fused.alarms(Y, later).mean())
        if split:
            assert fused.novelty_rate == pytest.approx(0.006, abs=0.002)
    assert rates[False] > 0.014, rates
    assert 0.005 <= rates[True] <= 0.013, rates


def test_fused_fit_warns_loudly_when_novelty_alone_exceeds_the_budget() -> None:
    X, packets = _stream_with_new_peers(20_000, 0.03, seed=2)
    base = make_detector("mahalanobis").fit(X, target_fpr=0.01)
    with pytest.warns(ThresholdWarning, match=r"novelty alone alarms on 3(\.\d+)? %"):
        fused = FusedNetDetector(base, novelty=True, per_class=False, key=KEY).fit(
            X, packets, target_fpr=0.01, fit_base=False)
    assert fused.novelty_rate > 0.01


def test_the_budget_and_its_warning_are_saved_and_bad_ones_refused() -> None:
    """The novelty rate, the statistical channel's rate and the warning go into the model
    file under ``calibration`` (where ``detect train`` and the lab read every calibration
    warning); a hostile record is refused."""
    X, packets = _stream_with_new_peers(20_000, 0.03, seed=2)
    base = make_detector("mahalanobis").fit(X, target_fpr=0.01)
    with pytest.warns(ThresholdWarning):
        warned = FusedNetDetector(base, novelty=True, per_class=False, key=KEY).fit(
            X, packets, target_fpr=0.01, fit_base=False)
    doc = json.loads(json.dumps(warned.to_doc()))
    assert doc["calibration"]["warnings"] and doc["calibration"]["statistical_fpr"] == 0.01
    back = FusedNetDetector.from_doc(base, doc)
    assert back.warnings == warned.warnings and back.novelty_rate == warned.novelty_rate
    X2, packets2 = _stream_with_new_peers(20_000, 0.003, seed=3)
    quiet = FusedNetDetector(base, novelty=True, per_class=False, key=KEY).fit(
        X2, packets2, target_fpr=0.01, fit_base=False)
    assert not quiet.warnings and quiet.statistical_fpr == pytest.approx(
        0.01 - quiet.novelty_rate)
    for bad in ({"novelty_rate": 2.0, "warnings": []}, {"novelty_rate": 0.1},
                {"novelty_rate": 0.1, "statistical_fpr": 0, "warnings": []}, []):
        with pytest.raises(DetectMisuse):
            FusedNetDetector.from_doc(base, {**doc, "calibration": bad})
    del doc["calibration"]  # a model file from before the budget still loads
    assert FusedNetDetector.from_doc(base, doc).novelty_rate == 0.0
