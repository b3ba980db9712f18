"""The new-peer calibration rule (tinyward.detect.newpeers) on synthetic traffic."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.detect._synthetic_net import plant
from tinyward.detect._common import calibrate_threshold
from tinyward.detect.errors import DetectMisuse
from tinyward.detect.models import make_detector
from tinyward.detect.netfeatures import NetFeatureExtractor
from tinyward.detect.newpeers import flow_groups, new_peer_rows, rename_peers
from tinyward.detect.pcap import Packet
from tinyward.detect.threshold import Calibration


def _packets() -> list[Packet]:
    return plant(2000, seed=3)


def test_rename_peers_changes_every_address_and_keeps_peers_apart() -> None:
    packets = _packets()
    renamed = rename_peers(packets)
    assert all(a.src != b.src and a.dst != b.dst for a, b in zip(packets, renamed, strict=True))
    assert len({p.src for p in packets}) == len({p.src for p in renamed})
    assert [(p.ts, p.size, p.sport, p.dport) for p in packets] == [
        (p.ts, p.size, p.sport, p.dport) for p in renamed]


def test_new_peer_rows_are_the_stretch_met_with_empty_pair_state() -> None:
    packets = _packets()
    rows = new_peer_rows(packets, 0.25)
    n_cal = round(len(packets) * 0.25)
    continuing = NetFeatureExtractor().transform(packets)[-n_cal:]
    assert rows.shape == continuing.shape
    # The first packet of the stretch meets no state (weights start at one packet) when
    # renamed, but a long history when not.
    assert rows[0, 1] == pytest.approx(np.log1p(1.0))
    assert continuing[0, 1] > rows[0, 1] + 1.0


def test_calibrate_threshold_keeps_the_higher_of_known_and_new_peers() -> None:
    rng = np.random.default_rng(0)
    known, new = rng.exponential(1.0, 4000), rng.exponential(2.0, 4000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = calibrate_threshold(known, 0.01, method="pot", on_insufficient="warn", n_fit=1)
        both = calibrate_threshold(np.r_[known, new], 0.01, method="pot",
                                   on_insufficient="warn", n_fit=1, n_new_peer_rows=4000)
        just_new = calibrate_threshold(new, 0.01, method="pot", on_insufficient="warn", n_fit=1)
    assert both.threshold == just_new.threshold > alone.threshold
    assert both.n_new_peer_rows == 4000 and both.n_calibration == 8000
    assert Calibration.from_json(both.to_json()) == both


def test_detectors_record_new_peer_rows_and_threshold_at_uses_them() -> None:
    packets = _packets()
    X = NetFeatureExtractor().transform(packets)
    rows = new_peer_rows(packets, 0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = make_detector("mahalanobis").fit(X)
        ruled = make_detector("mahalanobis").fit(X, new_peers=rows)
    assert ruled.calibration.n_new_peer_rows == len(rows)
    assert ruled.threshold >= plain.threshold
    assert ruled.threshold_at(0.01).threshold >= plain.threshold_at(0.01).threshold
    with pytest.raises(DetectMisuse):
        make_detector("mahalanobis").fit(X, new_peers=rows[:, :3])


def test_flow_groups_deal_flows_round_robin_by_size() -> None:
    packets = _packets()
    groups = flow_groups(packets, 3)
    assert set(groups.tolist()) == {0, 1, 2}
    with pytest.raises(DetectMisuse):
        flow_groups(packets[:1], 3)
