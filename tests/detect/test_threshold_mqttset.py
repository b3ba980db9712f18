"""On MQTTset's benign test (flows never used to fit or calibrate), each detector's own
threshold keeps the rate it promises: realised FPR at most 2x the request.

Thresholds follow the new-peer rule (:mod:`tinyward.detect.newpeers`): calibrated on the
later training stretch and on the same stretch re-scored as new peers, keeping the
higher. The benign test's clients are all new peers; with the later stretch alone, the
autoencoders realised 0.27 % at 0.1 % and KitNET 2.9 % / 5.0 % at 0.1 % / 1 %.

Only the upper side is asserted: a rate below half the request is a conservative
threshold (reported as not ``within_2x`` by ``detect eval`` and ``bench detect``, and
its cost is in the TPR columns), not a broken promise. Measured (options removed, Dec 2
2026): autoencoder(-int8) 0.14-0.15 % / 0.27 %, Mahalanobis(-int8) 0.013 % / 0.15 %,
KitNET 0.12 % / 0.38 %, IsolationForest 0.084 % / 0.57 % at 0.1 % / 1 % (docs/detect.md).
The rule was chosen on a check inside the training capture (leave one flow group out),
also tested here.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs_shared
from tinyward.detect import evaluate as ev
from tinyward.detect.baselines import (
    HalfSpaceTreesBaseline,
    IsolationForestBaseline,
    KitNETBaseline,
)
from tinyward.detect.models import make_detector
from tinyward.detect.newpeers import leave_flow_group_out
from tinyward.detect.pcap import read_packets
from tinyward.detect.threshold import realised_fpr

pytestmark = needs_shared("data", "mqttset", "benign-5mb")

OURS = ("autoencoder", "autoencoder-int8", "mahalanobis", "mahalanobis-int8")
BASELINES = {
    "kitnet": lambda: KitNETBaseline(),
    "halfspacetrees": lambda: HalfSpaceTreesBaseline(n_trees=10, height=10),  # bench default
    "isolationforest": lambda: IsolationForestBaseline(),
}
KINDS = (*OURS, *BASELINES)
# (kind, rate) pairs that still miss on the upper side, with the measured rate: none.
MISSED: dict[tuple[str, float], str] = {}


def _make(kind: str) -> Any:
    return BASELINES[kind]() if kind in BASELINES else make_detector(kind)


@pytest.fixture(scope="module")
def streams(mqtt: Path) -> ev.PacketStreams:
    return ev.packet_streams(mqtt, strip_tcp_options=True)


@pytest.fixture(scope="module")
def fitted(streams: ev.PacketStreams) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in KINDS:
        with warnings.catch_warnings():
            # 7,952 + 7,952 calibration vectors: below the 10,000 that 0.1 % needs (each
            # part alone is calibrated), so the fit at 0.1 % warns; checked below.
            warnings.simplefilter("ignore")
            detector = _make(kind)
            detector.fit(streams.train, new_peers=streams.new_peers)
        out[kind] = detector
    return out


@pytest.mark.parametrize("rate", [0.01, 0.001])
@pytest.mark.parametrize("kind", KINDS)
def test_mqttset_benign_test_realised_fpr_within_2x(streams: ev.PacketStreams,
                                                     fitted: dict[str, Any], kind: str,
                                                     rate: float, request: Any) -> None:
    if (kind, rate) in MISSED:
        request.applymarker(pytest.mark.xfail(strict=True, reason=MISSED[kind, rate]))
    detector = fitted[kind]
    cal = detector.threshold_at(rate)
    assert cal is not None
    if kind in OURS:
        # 1 %: supported, no warning. 0.1 %: 7,952 rows per part expect 8 exceedances,
        # under the support rule's 10: the threshold says so (and is still the GPD's).
        assert cal.method == "pot"
        if rate == 0.01:
            assert not cal.warnings
        else:
            assert any("needs at least 10000" in w for w in cal.warnings)
    assert cal.n_new_peer_rows == len(streams.new_peers)
    realised = realised_fpr(detector.score(streams.benign), cal.threshold, rate)
    assert realised.rate <= 2 * rate, realised.text()


def test_new_peer_rule_checked_inside_training_leave_one_flow_group_out(mqtt: Path) -> None:
    """The rule's own check, on training flows only (the benign test is not read): each
    third of the training flows, scored as new peers continuing from a state trained on
    the rest, keeps the rate with the new-peer rule, and does not with the later stretch
    alone (autoencoder 0.62 % at 0.1 %, 2.35 % at 1 % measured)."""
    train = read_packets(mqtt / "benign-5mb" / "benign-5mb-train.pcap", strip_tcp_options=True)
    rule = leave_flow_group_out(train, lambda: make_detector("autoencoder"))
    stretch_only = leave_flow_group_out(train, lambda: make_detector("autoencoder"),
                                        new_peers=False)
    for rate in (0.01, 0.001):
        assert rule[rate].rate <= 2 * rate, rule[rate].text()
        assert stretch_only[rate].rate > 2 * rate, stretch_only[rate].text()


def test_without_the_new_peer_rule_the_autoencoder_misses_on_new_clients(
        streams: ev.PacketStreams) -> None:
    """The rule switched off (later stretch alone): the benign test's new clients push
    the autoencoder's 0.1 % threshold past 2x (0.27 % measured), nearly all of it in the
    first seconds of the stream, when every pair's state is new."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        detector = make_detector("autoencoder").fit(streams.train)
    cal = detector.threshold_at(0.001)
    assert cal is not None and cal.n_new_peer_rows == 0
    scores = detector.score(streams.benign)
    realised = realised_fpr(scores, cal.threshold, 0.001)
    assert realised.rate > 2 * 0.001, realised.text()
    assert (scores[:200] > cal.threshold).sum() > realised.alarms / 2


def test_detect_train_calibrates_packet_models_with_the_new_peer_rule(mqtt: Path) -> None:
    """``tinyward detect train`` (pipeline.train) uses the same rule as eval and bench,
    for the detector and its per-class thresholds."""
    from tinyward.detect import pipeline

    train = mqtt / "benign-5mb" / "benign-5mb-train.pcap"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = pipeline.train([train], kind="mahalanobis", strip_tcp_options=True,
                               per_class=True)
    cal = model.detector.calibration
    assert cal is not None and cal.n_new_peer_rows == 7952 and cal.n_calibration == 2 * 7952
    assert model.fusion is not None and model.fusion.scale is not None
    assert model.fusion.scale.threshold[0] == pytest.approx(model.detector.threshold)
