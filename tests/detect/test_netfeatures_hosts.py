"""Per-host statistics must not mix a compromised host's attack into its normal replies."""

from __future__ import annotations

import random

import numpy as np

from tests.detect._synthetic_net import BROKER, CLIENTS, TCP, packet, plant
from tinyward.detect.models import make_detector
from tinyward.detect.netfeatures import NetFeatureConfig, NetFeatureExtractor

VICTIM = bytes([10, 0, 0, 9])


def _compromised_stream(seed: int) -> tuple[list, np.ndarray]:
    """Benign plant traffic, while client 10.0.0.2 also floods a new peer with large
    packets; returns the packets and a mask of the compromised client's BENIGN MQTT."""
    benign = plant(1500, seed=seed, start=1_700_100_000.0)
    rng = random.Random(seed)
    t0, t1 = benign[0].ts, benign[-1].ts
    flood = []
    t = t0
    while t < t1:
        t += rng.expovariate(50.0)
        flood.append(packet(t, CLIENTS[0], VICTIM, TCP, 50000, 80, 1400))
    packets = sorted(benign + flood, key=lambda p: p.ts)
    mask = np.array([p.src == CLIENTS[0] and p.dst == BROKER for p in packets])
    return packets, mask


def _false_alarms_on_benign_replies(host_by_pair: bool) -> float:
    extractor = NetFeatureExtractor(NetFeatureConfig(host_by_pair=host_by_pair))
    X = extractor.transform(plant(6000, seed=1))
    detector = make_detector("mahalanobis").fit(X, target_fpr=0.01)
    packets, mask = _compromised_stream(seed=2)
    _, Y = extractor.continue_with(packets)
    scores = detector.score(Y[mask])
    return float(np.mean(scores > detector.threshold))


def test_attack_first_source_keyed_hosts_make_a_compromised_hosts_normal_traffic_alarm() -> None:
    # The old behaviour (issue 13): statistics per source host mix the flood into the
    # compromised host's normal MQTT, so most of its benign packets alarm.
    assert _false_alarms_on_benign_replies(host_by_pair=False) > 0.5


def test_pair_keyed_hosts_keep_a_compromised_hosts_normal_traffic_normal() -> None:
    assert _false_alarms_on_benign_replies(host_by_pair=True) < 0.05


def test_old_models_without_the_switch_load_with_source_keyed_hosts() -> None:
    from tinyward.detect.netfeatures import extractor_from_doc, extractor_to_doc

    doc = extractor_to_doc(NetFeatureExtractor(NetFeatureConfig(host_slots=32)))
    del doc["config"]["host_by_pair"]  # type: ignore[attr-defined]
    assert extractor_from_doc(doc).config.host_by_pair is False
    assert extractor_from_doc(doc).feature_names[1] == "host_w_fast"
