"""tamperlimit: the bias/drift ceilings measure the injected signal, nothing else; and the
ceiling docs/detect.md states for SKAB's test streams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs_shared
from tinyward.detect import evaluate, tamperlimit
from tinyward.detect.tamper import TamperedStream, tamper_stream


def _white(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 10.0 + rng.normal(size=(n, 4))


def _walk(n: int, seed: int) -> np.ndarray:
    # slow wander of 30-sample means much larger than a 3-sigma bias of 300-sample std
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(size=(n, 4)), axis=0) + rng.normal(scale=0.1, size=(n, 4))


def test_known_bias_on_white_noise_is_separated_by_the_oracle_and_the_max() -> None:
    fit = [_white(2500, s) for s in range(3)]
    test = [_white(2500, 10 + s) for s in range(3)]
    c = tamperlimit.ceilings(fit, test, seed=0, rounds=2)
    assert c.counts["bias"] > 20 and c.counts["drift"] > 20
    assert c.own["bias"] > 0.98
    assert c.max_tail["bias"] > 0.95
    # the first drift windows carry a fraction of one sigma: the oracle is far from 1 there
    first = c.ramp[0]
    assert first[2] < 0.5 and first[3] < 0.95
    assert c.ramp[-2][3] > 0.98  # the end of the ramp (4 sigma) is clear


def test_oracle_is_chance_when_the_tampering_is_switched_off(monkeypatch) -> None:
    """Same labels and segments, samples left clean: an oracle that read labels or
    positions instead of the signal would still score high here."""
    def unsafe_labels_only(values: np.ndarray, **kw) -> TamperedStream:  # type: ignore[no-untyped-def]
        t = tamper_stream(values, **kw)
        t.values = np.array(values, dtype=np.float64, copy=True)
        return t

    monkeypatch.setattr(tamperlimit, "tamper_stream", unsafe_labels_only)
    fit = [_white(2500, s) for s in range(3)]
    test = [_white(2500, 10 + s) for s in range(3)]
    c = tamperlimit.ceilings(fit, test, seed=0, rounds=2)
    assert 0.35 < c.own["bias"] < 0.65
    assert 0.35 < c.own["drift"] < 0.65


def test_wandering_signal_hides_the_bias_even_from_the_oracle() -> None:
    fit = [_walk(2500, s) for s in range(3)]
    test = [_walk(2500, 10 + s) for s in range(3)]
    c = tamperlimit.ceilings(fit, test, seed=0, rounds=2)
    assert c.own["bias"] < 0.9


def test_ramp_matched_filter_auc() -> None:
    assert tamperlimit.ramp_matched_filter_auc(0) == pytest.approx(0.5)
    values = [tamperlimit.ramp_matched_filter_auc(e) for e in (10, 20, 30, 60)]
    assert values == sorted(values) and values[0] > 0.5 and values[-1] > 0.999
    assert tamperlimit.ramp_matched_filter_auc(20) == pytest.approx(0.881, abs=0.002)


def test_too_short_or_constant_streams_are_refused() -> None:
    from tinyward.detect.errors import DetectMisuse

    with pytest.raises(DetectMisuse):
        tamperlimit.LaggedZ().fit([_white(200, 0)])
    flat = _white(2500, 0)
    flat[:, 1] = 3.0
    with pytest.raises(DetectMisuse):
        tamperlimit.LaggedZ().fit([flat])


SKAB = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "skab"


@needs_shared("data", "skab")
def test_skab_test_streams_ceiling_is_below_the_goal_as_documented() -> None:
    """docs/detect.md: an oracle told the tampered channel reaches bias 0.900, drift 0.854
    on the eval's test streams with lagz's statistic; finding the channel costs ~0.15."""
    train, test = evaluate.sensor_files(SKAB)
    c = tamperlimit.ceilings([v for _, v in train], [v for _, v in test], seed=0)
    assert c.counts == {"bias": 312, "drift": 312}
    assert c.own["bias"] == pytest.approx(0.900, abs=0.001)
    assert c.own["drift"] == pytest.approx(0.854, abs=0.001)
    assert max(c.max_plain["bias"], c.max_tail["bias"]) < 0.76
    share, ceiling = c.ramp_ceiling[1][1:]
    assert share == pytest.approx(0.244, abs=0.001) and ceiling == pytest.approx(0.910, abs=0.001)
