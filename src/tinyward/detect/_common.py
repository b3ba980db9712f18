"""Pieces every detector shares: input checks, standardisation, calibration split, threshold.

The threshold itself is computed in :mod:`tinyward.detect.threshold`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tinyward.detect._modelfile import LIMITS, Doc
from tinyward.detect.errors import DetectMisuse
from tinyward.detect.threshold import (
    Calibration,
    Policy,
    calibrate,
    calibrate_mixture,
    legacy_calibration,
    split_calibration,
    unsafe_random_split,
)

# Standardised features are clipped to +-CLIP standard deviations. A value beyond that is
# anomalous whatever its exact size, and the clip gives the int8 input a fixed scale
# (127 / CLIP quanta per standard deviation) that float and int8 models share.
CLIP = 8.0


def check_features(X: Any, n_features: int | None = None) -> np.ndarray:
    """Return ``X`` as a finite float64 (n, d) array.

    Raises:
        DetectMisuse: not two-dimensional, empty, wrong width, or holding NaN/inf.
    """
    array = np.asarray(X, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DetectMisuse(f"features must be a non-empty (n, d) array, got shape {array.shape}")
    if n_features is not None and array.shape[1] != n_features:
        raise DetectMisuse(f"model expects {n_features} features per vector, got {array.shape[1]}")
    if array.shape[1] > LIMITS.max_features:
        raise DetectMisuse(f"at most {LIMITS.max_features} features are supported")
    if not np.all(np.isfinite(array)):
        row = int(np.argwhere(~np.isfinite(array))[0][0])
        raise DetectMisuse(f"features hold NaN or infinity (first at row {row})")
    return array


@dataclass
class Standardizer:
    """Per-feature centre and scale, fitted on benign training data.

    ``scale`` has a floor: a feature that is constant in benign data still gets a small
    positive scale, so any departure from its benign value counts as many deviations.
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardizer:
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        floor = 1e-3 * np.maximum(np.abs(mean), 1.0)
        return cls(mean=mean, scale=np.maximum(std, floor))

    def transform(self, X: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # an enormous feature saturates at the clip
            z = (X - self.mean) / self.scale
        return np.asarray(np.clip(z, -CLIP, CLIP), dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_doc(cls, doc: Doc, d: int) -> Standardizer:
        # Raw features (byte counts, rates) may be large; standardised ones are not.
        mean = doc.floats("mean", (d,), bound=1e15)
        scale = doc.floats("scale", (d,), positive=True, bound=1e15)
        if np.any(scale < 1e-9):
            raise doc.fail("scale", "holds a value below 1e-9 (fit floors scales at 1e-3)")
        return cls(mean=mean, scale=scale)


#: ``threshold_method`` values of every detector's ``fit``: "pot" (the default; see
#: :mod:`tinyward.detect.threshold`) or "unsafe-legacy" (the method before issue 13, for
#: comparisons only).
THRESHOLD_METHODS = ("pot", "unsafe-legacy")

#: How known-peer and new-peer calibration rows make one threshold: "max" (each part
#: calibrated apart, the higher kept; the rule) or "mixture" (one threshold for the
#: stream that is ``1 - w`` known and ``w`` new, w = the stretch's share of the training
#: stream). "mixture" was measured and not adopted (above 2x in 6 of 12 cells of the
#: check inside training, docs/detect.md); the switch stays so the table can be re-run.
NEW_PEER_RULES = ("max", "mixture")
NEW_PEER_RULE = "max"


def calibration_split(
    X: np.ndarray, holdout_fraction: float, seed: int, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """(rows to fit on, rows to calibrate on): the later contiguous ``holdout_fraction``
    for "pot", random rows for "unsafe-legacy".

    Raises:
        DetectMisuse: unknown method, or a fraction that leaves a part with < 10 rows.
    """
    if method == "pot":
        return split_calibration(X, holdout_fraction)
    if method == "unsafe-legacy":
        return unsafe_random_split(X, holdout_fraction, seed)
    raise DetectMisuse(f"threshold_method must be one of {THRESHOLD_METHODS}, got {method!r}")


def calibrate_threshold(
    scores: np.ndarray,
    target_fpr: float,
    *,
    method: str,
    on_insufficient: str,
    n_fit: int,
    integer: bool = False,
    what: str = "",
    n_new_peer_rows: int = 0,
) -> Calibration:
    """The calibrated threshold of one detector (see :func:`tinyward.detect.threshold.calibrate`).

    Raises:
        CalibrationRefused: too few calibration scores and ``on_insufficient="refuse"``.
        DetectMisuse: bad rate or method.
    """
    if method == "unsafe-legacy":
        return legacy_calibration(scores, target_fpr, n_fit=n_fit, integer=integer)
    if on_insufficient not in ("refuse", "warn"):
        raise DetectMisuse(f"on_insufficient must be 'refuse' or 'warn', got {on_insufficient!r}")
    policy = Policy(on_insufficient=on_insufficient)  # type: ignore[arg-type]
    if n_new_peer_rows <= 0:
        return calibrate(scores, target_fpr, n_fit=n_fit, policy=policy, integer=integer,
                         what=what)
    if NEW_PEER_RULE == "mixture":
        n_hold = len(scores) - n_new_peer_rows
        w = n_hold / max(n_fit + n_hold, 1)
        cal = calibrate_mixture([scores[:-n_new_peer_rows], scores[-n_new_peer_rows:]],
                                [1.0 - w, w], target_fpr, n_fit=n_fit, policy=policy,
                                integer=integer, what=what)
        return replace(cal, n_new_peer_rows=n_new_peer_rows)
    # Known peers (the stretch as it is) and new peers (the same stretch renamed) are
    # calibrated apart and the higher threshold is kept, so that each situation keeps
    # the rate (the rule, and its check inside training: docs/detect.md).
    known = calibrate(scores[:-n_new_peer_rows], target_fpr, n_fit=n_fit, policy=policy,
                      integer=integer, what=what)
    new = calibrate(scores[-n_new_peer_rows:], target_fpr, n_fit=n_fit, policy=policy,
                    integer=integer, what=what + " (new peers)" if what else "new peers")
    chosen = new if new.threshold > known.threshold else known
    # The warnings of the threshold in use: the other part's (the same shortage, said
    # twice) would only repeat it, and it is the lower threshold anyway.
    return replace(chosen, n_calibration=len(scores), n_new_peer_rows=n_new_peer_rows)


def pooled_calibration_scores(
    score: Any, hold: np.ndarray, new_peers: np.ndarray | None, n_features: int
) -> tuple[np.ndarray, int]:
    """(calibration scores, how many of them are new-peer rows): the scores of the later
    stretch ``hold``, followed by those of ``new_peers`` (the same stretch re-extracted
    with renamed peers, :func:`tinyward.detect.newpeers.new_peer_rows`) when given;
    :func:`calibrate_threshold` calibrates the two parts apart and keeps the higher.

    Raises:
        DetectMisuse: ``new_peers`` of the wrong width or holding NaN/inf.
    """
    scores = np.asarray(score(hold), dtype=np.float64)
    if new_peers is None:
        return scores, 0
    rows = check_features(new_peers, n_features)
    return np.concatenate([scores, np.asarray(score(rows), dtype=np.float64)]), len(rows)


def calibration_from_doc(doc: Doc) -> Calibration | None:
    """The optional ``calibration`` record of a model file (older files lack it).

    Raises:
        ModelFileError: present but malformed.
    """
    if doc.data.get("calibration") is None:
        return None
    try:
        return Calibration.from_json(doc.data["calibration"])
    except DetectMisuse as error:
        raise doc.fail("calibration", str(error)) from None


class OutlierDetectorAPI:
    """scikit-learn's outlier-detector conventions, on top of ``score`` and ``threshold``.

    As with ``IsolationForest`` or ``OneClassSVM``: :meth:`decision_function` is negative
    for an anomaly (``threshold - score``) and :meth:`predict` answers -1 for an anomaly
    and +1 for normal. :meth:`score` stays tinyward's anomaly score (higher = more
    anomalous; an alarm is ``score > threshold``).
    """

    threshold: float
    #: How ``threshold`` was calibrated (None for a model file written before issue 13).
    calibration: Calibration | None = None
    #: The calibration scores of the last ``fit`` (in memory only, never saved): lets an
    #: evaluation ask for the threshold at other rates with :meth:`threshold_at`.
    calibration_scores: np.ndarray | None = None
    #: How many of ``calibration_scores`` (at the end) are new-peer rows.
    n_new_peer_rows: int = 0

    def score(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _calibration_json(self) -> dict[str, Any]:
        """``{"calibration": ...}`` for the model file, or nothing if there is none."""
        return {} if self.calibration is None else {"calibration": self.calibration.to_json()}

    def threshold_at(self, target_fpr: float) -> Calibration | None:
        """The threshold this detector's last ``fit`` would have chosen for ``target_fpr``
        (same calibration scores and method; warns instead of refusing), or None after
        loading from a file."""
        cal = self.calibration
        if self.calibration_scores is None or cal is None:
            return None
        if cal.target_fpr == target_fpr:
            return cal
        integer = bool(getattr(self, "integer_scores", False))
        method = "unsafe-legacy" if cal.method == "unsafe-legacy" else "pot"
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            return calibrate_threshold(self.calibration_scores, target_fpr, method=method,
                                       on_insufficient="warn", n_fit=cal.n_fit,
                                       integer=integer, n_new_peer_rows=cal.n_new_peer_rows)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """``threshold - score(X)``: below zero is an anomaly (scikit-learn's sign)."""
        return np.asarray(self.threshold - self.score(X), dtype=np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """-1 for each anomalous row (``score > threshold``), +1 for a normal one."""
        return np.where(self.score(X) > self.threshold, -1, 1)
