"""The per-channel lagz alarm and the detector OR-ed with it (issue 13, item 6).

Figures on SKAB (dev split and test streams) are in docs/detect.md ("Injected
tampering"); these tests are small and synthetic.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyward.detect.errors import DetectMisuse
from tinyward.detect.models import make_detector
from tinyward.detect.sensorfeatures import (
    DEFAULT_FAMILIES,
    LAGZ_GAP,
    LAGZ_MARGIN,
    SensorFeatureConfig,
    SensorFeatureExtractor,
    sensor_extractor_from_doc,
    sensor_extractor_to_doc,
)
from tinyward.detect.sensorfusion import ChannelAlarmFused

CHANNELS = [f"c{i}" for i in range(6)]
WITH_LAGZ = SensorFeatureConfig(families=(*DEFAULT_FAMILIES, "lagz"))


def _plant(n: int, seed: int) -> np.ndarray:
    """Six channels at 3-decimal resolution: five wander fast (sines of periods ~1,000
    samples), the last one slowly; noise on all. The wanderers' benign excursions fill
    the range where a bias on the quiet channel lands (as SKAB's accelerometers and
    pressure do for its smooth channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    phase = rng.uniform(0, 6, size=6)
    speed = np.array([150.0, 170.0, 190.0, 210.0, 230.0, 3000.0])
    return np.round(np.sin(t / speed + phase) + rng.normal(0, 0.1, size=(n, 6)), 3)


@pytest.fixture(scope="module")
def fitted() -> tuple[SensorFeatureExtractor, np.ndarray]:
    extractor = SensorFeatureExtractor(CHANNELS, WITH_LAGZ)
    train = extractor.fit([_plant(2500, 1), _plant(2500, 2)])
    return extractor, train


def _fresh(extractor: SensorFeatureExtractor, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    stream = extractor.copy()
    stream.reset_stream()
    rows = stream.transform(values)
    return rows, stream.last_window_ends


def test_lagz_is_zero_until_a_lagged_reference_exists_and_its_tail_has_the_margin(
    fitted: tuple[SensorFeatureExtractor, np.ndarray],
) -> None:
    extractor, train = fitted
    lagz = extractor.feature_names.index("lagz_alarm")
    rows, ends = _fresh(extractor, _plant(1500, 3))
    young = ends - extractor.config.window < LAGZ_GAP + extractor.config.window
    assert young.any() and (rows[young, lagz] == 0.0).all()
    assert (rows[~young, lagz] > 0.0).all()
    # every training window sits at most 1 / margin of the way to the alarm
    assert train[:, lagz].max() <= 1.0 / LAGZ_MARGIN + 1e-12


def test_attack_first_a_bias_on_one_channel_missed_by_the_detector_raises_lagz(
    fitted: tuple[SensorFeatureExtractor, np.ndarray],
) -> None:
    # The attack: +3 sigma (of the 300 samples before) on the quiet channel for 120 s, as
    # tinyward.detect.tamper injects it. The plain detector, scoring every feature
    # together, alarms on few of its windows; lagz, the channel against its own lagged
    # past and its own benign tail, alarms on most of those it fully covers, and the
    # fused detector (OR) alarms wherever either does.
    extractor, train = fitted
    clean = _plant(2000, 4)
    values = clean.copy()
    values[1200:1320, 5] += 3.0 * values[900:1200, 5].std()
    rows, ends = _fresh(extractor, values)
    benign, _ = _fresh(extractor, clean)
    inside = (ends - extractor.config.window >= 1200) & (ends <= 1320)
    lagz = extractor.feature_names.index("lagz_alarm")
    base = make_detector("mahalanobis")
    base.fit(np.delete(train, lagz, axis=1))
    fused = ChannelAlarmFused(make_detector("mahalanobis"))
    fused.fit(np.column_stack([np.delete(train, lagz, axis=1), train[:, lagz]]))
    reorder = [i for i in range(rows.shape[1]) if i != lagz] + [lagz]
    plain_hits = np.mean(base.score(np.delete(rows, lagz, axis=1))[inside] > base.threshold)
    lagz_hits = np.mean(rows[inside, lagz] > 1.0)
    fused_alarm = fused.score(rows[:, reorder]) > fused.threshold
    assert lagz_hits >= 0.75 and lagz_hits > plain_hits + 0.25, (lagz_hits, plain_hits)
    np.testing.assert_array_equal(
        fused_alarm,
        (base.score(np.delete(rows, lagz, axis=1)) > base.threshold) | (rows[:, lagz] > 1.0))
    # on the clean copy lagz stays under its alarm
    assert np.mean(benign[:, lagz] > 1.0) <= 0.01


def test_fused_score_is_each_sides_score_on_one_scale() -> None:
    # fused > 1 exactly when the base detector alarms or the alarm column exceeds 1
    rng = np.random.default_rng(5)
    train = np.column_stack([rng.normal(size=(3000, 3)), rng.uniform(0, 0.6, 3000)])
    fused = ChannelAlarmFused(make_detector("mahalanobis")).fit(train)
    test = np.column_stack([rng.normal(size=(4000, 3)) * 1.6, rng.uniform(0, 1.5, 4000)])
    base_alarm = fused.base.score(test[:, :3]) > fused.base.threshold
    np.testing.assert_array_equal(fused.score(test) > 1.0, base_alarm | (test[:, 3] > 1.0))
    assert fused.name == "mahalanobis+lagz" and fused.threshold == 1.0
    assert fused.model_bytes() == fused.base.model_bytes() + 8
    with pytest.raises(DetectMisuse):
        ChannelAlarmFused(make_detector("mahalanobis")).fit(train[:, :1])


def test_lagz_state_survives_save_and_a_state_without_it_loads_only_when_off(
    fitted: tuple[SensorFeatureExtractor, np.ndarray],
) -> None:
    extractor, _ = fitted
    doc = sensor_extractor_to_doc(extractor)
    again = sensor_extractor_from_doc(doc)
    values = _plant(900, 6)
    np.testing.assert_array_equal(_fresh(again, values)[0], _fresh(extractor, values)[0])
    old = {k: v for k, v in doc.items() if not k.startswith("lagz_")}
    with pytest.raises(DetectMisuse, match="lagz_center"):
        sensor_extractor_from_doc(old)  # lagz on: its tables are needed
    old["config"] = {**doc["config"], "families": list(DEFAULT_FAMILIES)}  # type: ignore[dict-item]
    assert "lagz_alarm" not in sensor_extractor_from_doc(old).feature_names
    bad = dict(doc)
    bad["lagz_tail"] = [0.0] * len(CHANNELS)
    with pytest.raises(DetectMisuse, match="lagz_tail"):
        sensor_extractor_from_doc(bad)
