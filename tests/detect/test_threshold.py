"""Thresholds that keep their stated rate (tinyward.detect.threshold), attack first.

The attack: a threshold that promises 0.1 % false positives but is set on random rows of
an autocorrelated stream (neighbours of every held-out row were fitted on) realises
several times that on data the detector has never seen. The old method is reproduced
through the ``unsafe_random_split`` / ``legacy_calibration`` switch.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.signal import lfilter
from scipy.spatial import cKDTree
from scipy.stats import genpareto

from tinyward.detect.errors import CalibrationRefused, DetectError, DetectMisuse
from tinyward.detect.models import KINDS, load_detector, make_detector
from tinyward.detect.threshold import (
    GPD,
    Calibration,
    Policy,
    ThresholdWarning,
    calibrate,
    calibrate_mixture,
    clopper_pearson,
    fit_gpd,
    legacy_calibration,
    realised_fpr,
    required_scores,
    split_calibration,
    supported_fpr,
    unsafe_random_split,
)


def _ar_stream(n: int, rng: np.random.Generator, rho: float = 0.9, d: int = 3) -> np.ndarray:
    """AR(1) in d dimensions with Student-t (df 4) innovations: autocorrelated, heavy tail."""
    innovations = rng.standard_t(4, (n, d))
    return np.asarray(lfilter([1.0], [1.0, -rho], innovations, axis=0))


class _NearestNeighbour:
    """A memorising detector (distance to the nearest fitted row): the worst case for
    random-row calibration, whose held-out rows sit next to fitted neighbours."""

    def fit(self, X: np.ndarray) -> _NearestNeighbour:
        self.tree = cKDTree(X)
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.tree.query(X)[0])


def test_random_row_calibration_underestimates_tail_on_autocorrelated_data() -> None:
    # Four seeded streams: 20,000 benign training rows, then 100,000 unseen benign rows.
    # Measured (seeds 0-3, realised at 0.1 %): old 0.29-0.50 %, new 0.12-0.20 %.
    old_alarms = new_alarms = unseen = 0
    for seed in range(4):
        x = _ar_stream(120_000, np.random.default_rng(seed))
        train, future = x[:20_000], x[20_000:]
        fit_rows, held = unsafe_random_split(train, 0.2, seed=0)  # the switch: old method
        model = _NearestNeighbour().fit(fit_rows)
        old = legacy_calibration(model.score(held), 0.001)
        old_alarms += realised_fpr(model.score(future), old.threshold, 0.001).alarms
        fit_rows, cal_rows = split_calibration(train, 0.25)  # the protection
        model = _NearestNeighbour().fit(fit_rows)
        # 5,000 calibration rows expect 5 exceedances at 0.1 %: below the support rule
        # (10), so warned; the threshold is the same point estimate either way.
        with pytest.warns(ThresholdWarning, match="needs at least 10000"):
            new = calibrate(model.score(cal_rows), 0.001,
                            policy=Policy(bootstrap=20, on_insufficient="warn"))
        assert new.method == "pot"
        new_alarms += realised_fpr(model.score(future), new.threshold, 0.001).alarms
        unseen += len(future)
    old_rate, new_rate = old_alarms / unseen, new_alarms / unseen
    assert old_rate > 2.5 * 0.001, f"old method realised {old_rate:.4%}"
    assert 0.0005 <= new_rate <= 0.002, f"new method realised {new_rate:.4%}"


def test_too_little_calibration_data_is_refused_with_numbers() -> None:
    scores = np.random.default_rng(0).exponential(size=940)
    with pytest.raises(CalibrationRefused) as caught:
        calibrate(scores, 0.001)
    message = str(caught.value)
    assert "0.1 % FPR needs at least 10000 calibration scores, you have 940" in message
    assert isinstance(caught.value, DetectError)
    assert caught.value.needed == 10000 and caught.value.have == 940
    # the rate it names as supported is one the same data is not refused for
    assert caught.value.supported_fpr == pytest.approx(supported_fpr(940))
    calibrate(scores, math.ceil(caught.value.supported_fpr * 1e4) / 1e4, policy=Policy(bootstrap=0))


def test_too_little_data_warns_loudly_and_the_model_file_records_it(tmp_path) -> None:
    X = np.random.default_rng(1).normal(size=(600, 4))
    expected = "needs at least 10000 calibration scores, you have 150"
    with pytest.warns(ThresholdWarning, match=expected):
        det = make_detector("mahalanobis").fit(X, target_fpr=0.001)
    assert det.calibration is not None and det.calibration.warnings
    det.save(tmp_path / "m.json")
    loaded = load_detector(tmp_path / "m.json")
    assert loaded.calibration is not None
    assert "you have 150" in loaded.calibration.warnings[0]


def test_detector_fit_can_refuse() -> None:
    X = np.random.default_rng(1).normal(size=(600, 4))
    with pytest.raises(CalibrationRefused):
        make_detector("autoencoder-int8").fit(X, on_insufficient="refuse")


@pytest.mark.parametrize(("shape", "scale"), [(0.0, 1.0), (0.3, 2.0), (-0.3, 1.0), (0.8, 0.5)])
def test_gpd_fit_recovers_known_parameters_and_matches_scipy(shape: float, scale: float) -> None:
    y = genpareto.rvs(shape, scale=scale, size=3000, random_state=np.random.default_rng(7))
    fitted = fit_gpd(y[y > 0])
    assert fitted.shape == pytest.approx(shape, abs=0.08)
    assert fitted.scale == pytest.approx(scale, rel=0.1)
    ref_shape, _, ref_scale = genpareto.fit(y[y > 0], floc=0)
    assert fitted.shape == pytest.approx(ref_shape, abs=2e-3)
    assert fitted.scale == pytest.approx(ref_scale, rel=2e-3)


def test_pot_threshold_hits_known_quantiles() -> None:
    rng = np.random.default_rng(3)
    # exponential: the 1 - q quantile is -log(q)
    cal = calibrate(rng.exponential(size=20_000), 0.001, policy=Policy(bootstrap=50))
    assert cal.threshold == pytest.approx(-math.log(0.001), rel=0.06)
    lo, hi = cal.interval or (0, 0)
    assert lo < cal.threshold < hi
    # Pareto (Lomax, tail index 3): P(X > x) = (1 + x)^-3
    cal = calibrate(rng.pareto(3, size=20_000), 0.001, policy=Policy(bootstrap=50))
    assert cal.threshold == pytest.approx(0.001 ** (-1 / 3) - 1, rel=0.15)
    assert cal.shape == pytest.approx(1 / 3, abs=0.12)
    # on fresh data from the same distribution the rate is kept within 2x
    fresh = realised_fpr(rng.pareto(3, size=200_000), cal.threshold, 0.001)
    assert fresh.within_2x


def test_gpd_isf_and_sf_are_inverse() -> None:
    for gpd in (GPD(0.0, 2.0), GPD(0.4, 1.5), GPD(-0.3, 1.0)):
        for p in (0.5, 0.1, 1e-3):
            assert float(gpd.sf(gpd.isf(p))) == pytest.approx(p, rel=1e-9)


def test_requested_rate_inside_the_data_uses_the_plain_quantile() -> None:
    scores = np.arange(1000, dtype=float)
    cal = calibrate(scores, 0.3, policy=Policy(bootstrap=0))
    assert cal.method == "empirical" and cal.threshold == 700.0


def test_integer_scores_round_down_without_changing_alarms() -> None:
    scores = np.random.default_rng(2).poisson(50, size=10_000).astype(float)
    cal = calibrate(scores, 0.01, integer=True, policy=Policy(bootstrap=0))
    exact = calibrate(scores, 0.01, policy=Policy(bootstrap=0))
    assert cal.threshold == int(cal.threshold) == np.floor(exact.threshold)
    # the name's promise: on integer scores the rounded threshold raises the same alarms
    assert np.array_equal(scores > cal.threshold, scores > exact.threshold)


def test_required_and_supported_agree() -> None:
    for rate in (0.1, 0.01, 0.001, 1e-4):
        n = required_scores(rate)
        assert supported_fpr(n) <= rate * (1 + 1e-9)
        assert supported_fpr(n - 1) > rate


def test_clopper_pearson_known_values() -> None:
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 0.3084971), abs=1e-6)
    lo, hi = clopper_pearson(5, 100)
    assert lo == pytest.approx(0.01643, abs=1e-4) and hi == pytest.approx(0.11284, abs=1e-4)
    with pytest.raises(DetectMisuse):
        clopper_pearson(3, 2)


def test_realised_rate_within_2x_both_ways() -> None:
    benign = np.arange(10_000, dtype=float)
    assert realised_fpr(benign, 9989.5, 0.001).within_2x  # 10 alarms: 0.1 %
    assert not realised_fpr(benign, 9969.5, 0.001).within_2x  # 30: 3x too many
    assert not realised_fpr(benign, 9997.5, 0.001).within_2x  # 2: 5x too few
    assert "0.1 % requested: 0.1 % realised" in realised_fpr(benign, 9989.5, 0.001).text()


def test_calibration_split_is_contiguous_and_later() -> None:
    X = np.arange(100).reshape(-1, 1)
    fit_part, cal_part = split_calibration(X, 0.25)
    assert fit_part[:, 0].tolist() == list(range(75))
    assert cal_part[:, 0].tolist() == list(range(75, 100))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_detector_calibrates_on_the_later_rows(kind: str) -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(12_000, 6))
    det = make_detector(kind).fit(X, target_fpr=0.001)
    assert det.calibration is not None and det.calibration.method == "pot"
    assert det.calibration.n_calibration == 3000 and det.calibration.n_fit == 9000
    assert np.array_equal(det.calibration_scores, det.score(X[9000:]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough data: no warning at 0.1 % or 1 %
        assert det.threshold_at(0.01).threshold < det.threshold


@pytest.mark.parametrize("bad", [
    {"method": "magic"}, {"target_fpr": 2}, {"warnings": "x"}, {"interval": [1]},
    {"n_peaks": -1}, {"threshold": "NaN"},
])
def test_bad_calibration_record_in_a_model_file_is_refused(bad: dict, tmp_path) -> None:
    import json

    from tinyward.detect.errors import ModelFileError

    rng = np.random.default_rng(0)
    det = make_detector("mahalanobis").fit(rng.normal(size=(9000, 3)))
    det.save(tmp_path / "m.json")
    doc = json.loads((tmp_path / "m.json").read_text())
    doc["calibration"].update(bad)
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="calibration"):
        load_detector(tmp_path / "m.json")


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=400),
       st.sampled_from([0.2, 0.05, 0.01]))
def test_calibrate_never_crashes_on_odd_scores(values: list[float], rate: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = calibrate(np.array(values), rate,
                        policy=Policy(on_insufficient="warn", bootstrap=5))
    assert math.isfinite(cal.threshold)
    assert Calibration.from_json(cal.to_json()) == cal


def test_eval_reports_realised_fpr_with_interval_for_each_requested_rate() -> None:
    from types import SimpleNamespace

    from tinyward.detect.evaluate import evaluate_scores

    rng = np.random.default_rng(8)
    streams = SimpleNamespace(
        train=rng.normal(size=(12_000, 4)), benign=rng.normal(size=(50_000, 4)),
        attacks={"shift": rng.normal(size=(500, 4)) + 4.0}, benign_hours=1.0,
        feature_us_per_packet=1.0, state_bytes=0)
    result = evaluate_scores(make_detector("mahalanobis"), streams)
    for rate in ("0.01", "0.001"):
        entry = result["thresholds"][rate]
        realised = entry["realised"]
        assert realised["requested"] == float(rate) and realised["n"] == 50_000
        assert realised["low"] <= realised["rate"] <= realised["high"]
        assert realised["within_2x"], realised  # i.i.d. benign data: the rate is kept
        assert entry["calibration"]["method"] == "pot" and entry["tpr"]["shift"] > 0.5


# ------------------------------------------------------------------ issue 13: within 2x
def _lognormal(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.lognormal(size=n)


_TAILS = {
    "exponential": lambda rng, n: rng.exponential(size=n),
    "gpd-0.3": lambda rng, n: genpareto.rvs(0.3, size=n, random_state=rng),
    "lognormal": _lognormal,
    "half-normal": lambda rng, n: np.abs(rng.normal(size=n)),
}


def _realised_ratios(draw, rate: float, n: int, seeds: int = 20) -> np.ndarray:
    """realised / requested on 400,000 fresh draws, for ``seeds`` calibrations of ``n``."""
    out = []
    for seed in range(seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cal = calibrate(draw(np.random.default_rng(seed), n), rate,
                            policy=Policy(bootstrap=0, on_insufficient="warn"))
        fresh = draw(np.random.default_rng(10_000 + seed), 400_000)
        out.append(float(np.mean(fresh > cal.threshold)) / rate)
    return np.asarray(out)


@pytest.mark.parametrize("rate", [0.001, 0.01])
@pytest.mark.parametrize("tail", sorted(_TAILS))
def test_supported_rate_is_kept_within_2x_on_fresh_data(tail: str, rate: float) -> None:
    """The smallest calibration stretch the support rule accepts (``required_scores``:
    10 expected exceedances) gives a point-estimate threshold whose realised rate on a
    large fresh sample from the same distribution is within 2x both ways in at least 19
    of 20 independent calibrations (measured: 0 or 1 outside per case, the worst 2.46x);
    the rule's old minimum (2 expected exceedances) missed up to 7 of 20 (next test)."""
    ratios = _realised_ratios(_TAILS[tail], rate, required_scores(rate))
    assert np.sum((ratios < 0.5) | (ratios > 2.0)) <= 1, np.round(ratios, 2)
    # the point estimate is not biased either way by more than a third (median)
    assert 0.75 <= float(np.median(ratios)) <= 1.33, np.round(ratios, 2)


def test_the_old_support_minimum_missed_2x_too_often() -> None:
    """Why ``min_events`` is 10: a stretch expecting only 2 exceedances at 0.1 % (the
    rule before, 2,000 scores) leaves a lognormal tail's threshold more than 2x off on
    fresh data in several of 20 calibrations (7 measured)."""
    ratios = _realised_ratios(_lognormal, 0.001, 2000)
    assert np.sum((ratios < 0.5) | (ratios > 2.0)) >= 3, np.round(ratios, 2)


def test_unsupported_rate_warns_then_refuses_with_the_supported_rate() -> None:
    """The calibration data cannot support the rate: warned (the text says which rate it
    can support) or refused; at the supported rate neither happens."""
    scores = np.random.default_rng(4).exponential(size=5000)
    with pytest.warns(ThresholdWarning, match="you have 5000; these support FPR >= 0.2 %"):
        calibrate(scores, 0.001, policy=Policy(bootstrap=0, on_insufficient="warn"))
    with pytest.raises(CalibrationRefused) as caught:
        calibrate(scores, 0.001, policy=Policy(bootstrap=0))
    assert caught.value.supported_fpr == pytest.approx(0.002)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calibrate(scores, 0.002, policy=Policy(bootstrap=0))


def _mixture_quantile(scales: tuple[float, float], weights: tuple[float, float],
                      rate: float) -> float:
    """The z with sum(w * exp(-z / scale)) = rate (two exponential parts), by bisection."""
    lo, hi = 0.0, 100.0 * max(scales)
    for _ in range(200):
        mid = (lo + hi) / 2
        if sum(w * math.exp(-mid / s) for w, s in zip(weights, scales, strict=True)) > rate:
            lo = mid
        else:
            hi = mid
    return hi


@pytest.mark.parametrize("rate", [0.001, 0.01])
def test_mixture_threshold_hits_the_mixture_quantile(rate: float) -> None:
    """calibrate_mixture (the alternative new-peer rule, measured and not adopted, see
    docs/detect.md) solves sum(w_i P_i(score > z)) = rate: two exponential parts with
    known scales give a known answer, and a fresh stream mixed in those weights
    realises the rate within 2x."""
    rng = np.random.default_rng(6)
    scales, weights = (1.0, 3.0), (0.75, 0.25)
    parts = [rng.exponential(s, 20_000) for s in scales]
    cal = calibrate_mixture(parts, list(weights), rate, policy=Policy(bootstrap=20))
    assert cal.threshold == pytest.approx(_mixture_quantile(scales, weights, rate), rel=0.1)
    lo, hi = cal.interval or (0.0, 0.0)
    assert lo <= cal.threshold <= hi
    fresh = np.where(rng.random(1_000_000) < weights[1], rng.exponential(scales[1], 1_000_000),
                     rng.exponential(scales[0], 1_000_000))
    assert realised_fpr(fresh, cal.threshold, rate).within_2x
    assert cal.mixture_weights == weights
    assert Calibration.from_json(cal.to_json()) == cal


def test_mixture_refuses_a_part_too_short_for_the_rate() -> None:
    rng = np.random.default_rng(7)
    with pytest.raises(CalibrationRefused, match="part 2"):
        calibrate_mixture([rng.exponential(size=20_000), rng.exponential(size=500)],
                          [0.5, 0.5], 0.001)
    with pytest.raises(DetectMisuse):
        calibrate_mixture([rng.exponential(size=100)], [0.5], 0.01)
