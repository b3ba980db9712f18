"""Pieces every detector shares: input checks, standardisation, hold-out split, threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyward.detect._modelfile import LIMITS, Doc
from tinyward.detect.errors import DetectMisuse

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


def split_holdout(
    X: np.ndarray, holdout_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split benign rows at random (fixed seed) into a training and a threshold part.

    Raises:
        DetectMisuse: the fraction is outside (0, 1) or either part would be tiny.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise DetectMisuse(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    n = X.shape[0]
    n_hold = round(n * holdout_fraction)
    if n_hold < 10 or n - n_hold < 10:
        raise DetectMisuse(f"{n} benign vectors are too few to fit and hold out {holdout_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    return X[order[n_hold:]], X[order[:n_hold]]


def choose_threshold(benign_scores: np.ndarray, target_fpr: float) -> float:
    """The smallest observed held-out score that at most ``target_fpr`` of them exceed.

    An alarm is ``score > threshold``. With fewer than 1/target_fpr held-out vectors the
    threshold is the largest held-out score, and the FPR is only bounded by 1/n.

    Raises:
        DetectMisuse: target_fpr outside (0, 1).
    """
    if not 0.0 < target_fpr < 1.0:
        raise DetectMisuse(f"target_fpr must be in (0, 1), got {target_fpr}")
    return float(np.quantile(benign_scores, 1.0 - target_fpr, method="higher"))


class OutlierDetectorAPI:
    """scikit-learn's outlier-detector conventions, on top of ``score`` and ``threshold``.

    As with ``IsolationForest`` or ``OneClassSVM``: :meth:`decision_function` is negative
    for an anomaly (``threshold - score``) and :meth:`predict` answers -1 for an anomaly
    and +1 for normal. :meth:`score` stays tinyward's anomaly score (higher = more
    anomalous; an alarm is ``score > threshold``).
    """

    threshold: float

    def score(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """``threshold - score(X)``: below zero is an anomaly (scikit-learn's sign)."""
        return np.asarray(self.threshold - self.score(X), dtype=np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """-1 for each anomalous row (``score > threshold``), +1 for a normal one."""
        return np.where(self.score(X) > self.threshold, -1, 1)
