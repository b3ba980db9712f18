"""Detectors: fit on benign only, threshold at the stated FPR, save/load round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tinyward.detect.errors import DetectMisuse, NotFittedError
from tinyward.detect.models import KINDS, Detector, load_detector, make_detector

from ._synthetic import make_data

BENIGN, TEST, ATTACK = make_data()


@pytest.fixture(scope="module", params=sorted(KINDS))
def fitted(request: pytest.FixtureRequest) -> Detector:
    detector = make_detector(request.param)
    detector.fit(BENIGN, target_fpr=0.01, seed=0)
    return detector


def test_detector_satisfies_protocol(fitted: Detector) -> None:
    assert isinstance(fitted, Detector)


def test_separates_attacks_from_benign(fitted: Detector) -> None:
    scores = np.r_[fitted.score(TEST), fitted.score(ATTACK)]
    labels = np.r_[np.zeros(len(TEST)), np.ones(len(ATTACK))]
    assert roc_auc_score(labels, scores) > 0.95


def test_threshold_meets_target_fpr_on_unseen_benign(fitted: Detector) -> None:
    fpr = float(np.mean(fitted.score(TEST) > fitted.threshold))
    # 1% target on 2000 unseen benign vectors: allow sampling noise, not a broken rule.
    assert fpr < 0.03


def test_save_load_round_trip_scores_identically(fitted: Detector, tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    fitted.save(path)
    loaded = load_detector(path)
    assert type(loaded) is type(fitted)
    assert loaded.threshold == fitted.threshold
    assert np.array_equal(loaded.score(TEST[:200]), fitted.score(TEST[:200]))
    assert type(fitted).load(path).threshold == fitted.threshold


def test_same_seed_same_model() -> None:
    a, b = make_detector("autoencoder"), make_detector("autoencoder")
    a.fit(BENIGN[:2000], seed=3)
    b.fit(BENIGN[:2000], seed=3)
    assert np.array_equal(a.score(TEST[:100]), b.score(TEST[:100]))


def test_unfitted_detector_refuses_to_score() -> None:
    with pytest.raises(NotFittedError):
        make_detector("mahalanobis-int8").score(TEST)


def test_wrong_width_is_refused(fitted: Detector) -> None:
    with pytest.raises(DetectMisuse, match="features"):
        fitted.score(TEST[:, :-1])


def test_nan_features_are_refused() -> None:
    bad = BENIGN.copy()
    bad[5, 2] = np.nan
    with pytest.raises(DetectMisuse, match="row 5"):
        make_detector("mahalanobis").fit(bad)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(DetectMisuse, match="unknown detector kind"):
        make_detector("kitnet")


def test_int8_model_fits_in_4_kb(fitted: Detector) -> None:
    if fitted.name.endswith("-int8"):
        assert fitted.model_bytes() <= 4096


@pytest.mark.parametrize(("kind", "kw"), [
    ("autoencoder", {"hidden": "x"}), ("autoencoder", {"hidden": 0}),
    ("autoencoder-int8", {"epochs": -1}), ("autoencoder", {"learning_rate": 5.0}),
    ("mahalanobis", {"ridge": -1.0}), ("mahalanobis-int8", {"ridge": 1e-5}),
    ("mahalanobis", {"colour": "red"}),
])
def test_bad_constructor_arguments_are_refused_at_once(kind: str, kw: dict) -> None:
    with pytest.raises(DetectMisuse):
        make_detector(kind, **kw)


def test_scikit_learn_conventions(fitted: Detector) -> None:
    # fit returns the detector; predict is -1 for an anomaly and +1 for normal;
    # decision_function is negative exactly where an alarm is raised.
    X = np.r_[TEST[:200], ATTACK[:200]]
    alarms = fitted.score(X) > fitted.threshold
    assert 0 < alarms.sum() < len(X)
    np.testing.assert_array_equal(fitted.predict(X), np.where(alarms, -1, 1))
    np.testing.assert_array_equal(fitted.decision_function(X) < 0, alarms)
    assert fitted.predict(ATTACK).mean() < fitted.predict(TEST).mean()


def test_fit_returns_the_detector_and_signs_match_isolation_forest() -> None:
    from sklearn.ensemble import IsolationForest

    ours = make_detector("mahalanobis").fit(BENIGN, target_fpr=0.01)
    assert isinstance(ours, Detector)
    forest = IsolationForest(random_state=0).fit(BENIGN)
    # Same sign convention: attacks get lower decision values than benign rows.
    for model in (ours, forest):
        assert model.decision_function(ATTACK).mean() < model.decision_function(TEST).mean()
