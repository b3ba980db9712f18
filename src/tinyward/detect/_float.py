"""The float detectors: a tiny autoencoder and a regularised Mahalanobis distance.

Both learn from benign vectors only, on standardised and clipped features: fitted on the
earlier benign rows, with the alarm threshold calibrated on the later ones for a stated
false-positive rate (:mod:`tinyward.detect.threshold`).
They are the reference that the int8 versions (``_int8_models.py``) are measured against.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Self

import numpy as np

from tinyward.detect._common import (
    OutlierDetectorAPI,
    Standardizer,
    calibrate_threshold,
    calibration_from_doc,
    calibration_split,
    check_features,
    pooled_calibration_scores,
)
from tinyward.detect._modelfile import LIMITS, Doc, read_model, write_model
from tinyward.detect.cost import autoencoder_ops, hidden_for_budget
from tinyward.detect.errors import DetectMisuse, ModelFileError, NotFittedError


def default_hidden(d: int) -> int:
    """Hidden width for d inputs: about d/5, at least 2, capped so that the operations
    per vector stay at most a tenth of KitNET's on 100 features (see ``cost.py``)."""
    return hidden_for_budget(d)


class _HoldoutFitted(OutlierDetectorAPI):
    """Fitting shared by the float models: weights on the earlier benign rows, threshold
    calibrated on the later ones for the stated false-positive rate."""

    threshold: float
    name: str
    standardizer: Standardizer | None

    def _require_fitted(self) -> Standardizer:
        if self.standardizer is None:
            raise NotFittedError(f"{self.name}: call fit() before using the detector")
        return self.standardizer

    def fit_weights(self, train: np.ndarray, seed: int) -> None:
        raise NotImplementedError

    def fit(
        self,
        X: np.ndarray,
        *,
        target_fpr: float = 0.001,
        holdout_fraction: float = 0.25,
        seed: int = 0,
        threshold_method: str = "pot",
        on_insufficient: str = "warn",
        new_peers: np.ndarray | None = None,
    ) -> Self:
        """Fit on the earlier benign rows of ``X`` (in stream order); calibrate the
        threshold on the later ``holdout_fraction`` (:mod:`tinyward.detect.threshold`),
        pooled with ``new_peers`` when given: the same stretch as new peers see it
        (:func:`tinyward.detect.newpeers.new_peer_rows`; packet features only).

        ``on_insufficient``: "warn" (a :class:`~tinyward.detect.threshold.ThresholdWarning`,
        also kept in :attr:`calibration`) or "refuse" when the calibration rows cannot
        support ``target_fpr``. ``threshold_method="unsafe-legacy"``: the method before
        issue 13 (random rows, plain quantile), for comparisons only.

        Returns the detector itself (scikit-learn's convention).

        Raises:
            CalibrationRefused: too little calibration data and ``on_insufficient="refuse"``.
            DetectMisuse: bad features or parameters.
        """
        X = check_features(X)
        train, hold = calibration_split(X, holdout_fraction, seed, threshold_method)
        self.fit_weights(train, seed)
        self.calibration_scores, self.n_new_peer_rows = pooled_calibration_scores(
            self.score, hold, new_peers, X.shape[1])
        self.calibration = calibrate_threshold(
            self.calibration_scores, target_fpr, method=threshold_method,
            on_insufficient=on_insufficient, n_fit=len(train), what=self.name,
            n_new_peer_rows=self.n_new_peer_rows)
        self.threshold = self.calibration.threshold
        return self


class AutoencoderDetector(_HoldoutFitted):
    """d -> h (tanh) -> d (linear) autoencoder; score = RMSE of the reconstruction.

    Trained with Adam on mean squared error, in numpy, from a fixed seed.
    """

    name = "autoencoder"

    def __init__(
        self,
        hidden: int | None = None,
        *,
        epochs: int = 60,
        learning_rate: float = 0.01,
        batch_size: int = 128,
        max_steps: int = 6000,
    ) -> None:
        """Raises DetectMisuse for a hidden width or training setting out of range."""
        if hidden is not None and not (
            isinstance(hidden, int) and 1 <= hidden <= LIMITS.max_hidden
        ):
            raise DetectMisuse(
                f"hidden must be an integer in [1, {LIMITS.max_hidden}], got {hidden!r}"
            )
        for name, value in (
            ("epochs", epochs),
            ("batch_size", batch_size),
            ("max_steps", max_steps),
        ):
            if not (isinstance(value, int) and value >= 1):
                raise DetectMisuse(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(learning_rate, (int, float)) and 0 < learning_rate < 1):
            raise DetectMisuse(f"learning_rate must be in (0, 1), got {learning_rate!r}")
        self.hidden = hidden
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.threshold = math.inf
        self.standardizer: Standardizer | None = None
        self.W1: np.ndarray = np.zeros((0, 0))
        self.W2: np.ndarray = np.zeros((0, 0))
        self.b1: np.ndarray = np.zeros(0)
        self.b2: np.ndarray = np.zeros(0)

    # -- fitting -------------------------------------------------------------------------
    def fit_weights(self, train: np.ndarray, seed: int) -> None:
        """Fit standardiser and weights on ``train`` (no threshold)."""
        self.standardizer = Standardizer.fit(train)
        Z = self.standardizer.transform(train)
        d = Z.shape[1]
        h = self.hidden or default_hidden(d)
        rng = np.random.default_rng(seed)
        limit1 = math.sqrt(6.0 / (d + h))
        params = [
            rng.uniform(-limit1, limit1, (h, d)),
            np.zeros(h),
            rng.uniform(-limit1, limit1, (d, h)),
            np.zeros(d),
        ]
        moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
        n = Z.shape[0]
        steps = 0
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for epoch in range(self.epochs):
            order = rng.permutation(n)
            # Step size decays linearly to a tenth over the run: stable final weights.
            lr = self.learning_rate * (1.0 - 0.9 * epoch / max(1, self.epochs - 1))
            for start in range(0, n, self.batch_size):
                if steps >= self.max_steps:
                    break
                batch = Z[order[start : start + self.batch_size]]
                grads = _gradients(params, batch)
                steps += 1
                for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                    m, v = moments[i]
                    m *= beta1
                    m += (1 - beta1) * g
                    v *= beta2
                    v += (1 - beta2) * g * g
                    m_hat = m / (1 - beta1**steps)
                    v_hat = v / (1 - beta2**steps)
                    p -= lr * m_hat / (np.sqrt(v_hat) + eps)
        self.W1, self.b1, self.W2, self.b2 = params

    # -- scoring ------------------------------------------------------------------------
    def score(self, X: np.ndarray) -> np.ndarray:
        """RMSE of reconstruction in standardised units (float64, higher = more anomalous).

        Raises:
            NotFittedError: before fit.
            DetectMisuse: bad features.
        """
        std = self._require_fitted()
        Z = std.transform(check_features(X, self.W1.shape[1]))
        recon = np.tanh(Z @ self.W1.T + self.b1) @ self.W2.T + self.b2
        return np.asarray(np.sqrt(np.mean((recon - Z) ** 2, axis=1)), dtype=np.float64)

    # -- size and cost ------------------------------------------------------------------
    def model_bytes(self) -> int:
        """Bytes of parameters as float32 (standardiser, weights, biases, threshold)."""
        self._require_fitted()
        h, d = int(self.W1.shape[0]), int(self.W1.shape[1])
        return 4 * (2 * d + 2 * h * d + h + d + 1)

    def ops_per_inference(self) -> int:
        """Standardise d, 2*d*h multiply-adds, h activations, d squared errors."""
        self._require_fitted()
        h, d = int(self.W1.shape[0]), int(self.W1.shape[1])
        return autoencoder_ops(d, h)

    # -- storage ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        std = self._require_fitted()
        return {
            "threshold": self.threshold,
            **self._calibration_json(),
            "standardizer": std.to_json(),
            "W1": self.W1.tolist(),
            "b1": self.b1.tolist(),
            "W2": self.W2.tolist(),
            "b2": self.b2.tolist(),
        }

    @classmethod
    def from_doc(cls, doc: Doc) -> AutoencoderDetector:
        W1 = doc.get("W1")
        if not (isinstance(W1, list) and W1 and isinstance(W1[0], list)):
            raise doc.fail("W1", "is not a non-empty list of rows")
        h, d = len(W1), len(W1[0])
        if not (1 <= d <= LIMITS.max_features and 1 <= h <= LIMITS.max_hidden):
            raise doc.fail("W1", f"shape ({h}, {d}) is outside the supported sizes")
        model = cls(hidden=h)
        model.standardizer = Standardizer.from_doc(doc.section("standardizer"), d)
        model.W1 = doc.floats("W1", (h, d))
        model.b1 = doc.floats("b1", (h,))
        model.W2 = doc.floats("W2", (d, h))
        model.b2 = doc.floats("b2", (d,))
        model.threshold = doc.number("threshold")
        model.calibration = calibration_from_doc(doc)
        return model

    def save(self, path: Path) -> None:
        """Write the detector to ``path`` atomically. Raises NotFittedError, OSError."""
        write_model(path, self.name, self.to_json())

    @classmethod
    def load(cls, path: Path) -> AutoencoderDetector:
        """Read a detector saved by :meth:`save`. Raises ModelFileError."""
        kind, doc = read_model(path)
        if kind != cls.name:
            raise ModelFileError(path, f"holds a {kind!r} detector, not {cls.name!r}")
        return cls.from_doc(doc)


def _gradients(params: list[np.ndarray], Z: np.ndarray) -> list[np.ndarray]:
    """Gradients of mean squared reconstruction error for one batch."""
    W1, b1, W2, b2 = params
    hidden = np.tanh(Z @ W1.T + b1)
    recon = hidden @ W2.T + b2
    delta_out = 2.0 * (recon - Z) / Z.size
    gW2 = delta_out.T @ hidden
    gb2 = delta_out.sum(axis=0)
    delta_hidden = (delta_out @ W2) * (1.0 - hidden**2)
    gW1 = delta_hidden.T @ Z
    gb1 = delta_hidden.sum(axis=0)
    return [gW1, gb1, gW2, gb2]


class MahalanobisDetector(_HoldoutFitted):
    """Squared Mahalanobis distance under a Ledoit-Wolf shrunk covariance plus a ridge.

    The precision matrix is stored as its Cholesky factor U (upper triangular,
    U^T U = precision), so a score is ||U (z - mu)||^2: d(d+1)/2 multiply-adds.
    """

    name = "mahalanobis"

    def __init__(self, ridge: float = 1e-3) -> None:
        """Raises DetectMisuse for a ridge that is not a positive number."""
        if not (isinstance(ridge, (int, float)) and 0 < ridge < 1e6):
            raise DetectMisuse(f"ridge must be a positive number, got {ridge!r}")
        self.ridge = ridge
        self.threshold = math.inf
        self.standardizer: Standardizer | None = None
        self.mu: np.ndarray = np.zeros(0)
        self.U: np.ndarray = np.zeros((0, 0))

    def fit_weights(self, train: np.ndarray, seed: int) -> None:
        """Fit standardiser, centre and precision factor on ``train`` (no threshold)."""
        del seed  # deterministic
        self.standardizer = Standardizer.fit(train)
        Z = self.standardizer.transform(train)
        d = Z.shape[1]
        self.mu = Z.mean(axis=0)
        # Imported here: scikit-learn (and SciPy) take about a second to import, and every
        # tinyward command, the fleet server included, loads this module's CLI.
        from sklearn.covariance import LedoitWolf

        cov = LedoitWolf().fit(Z).covariance_ + self.ridge * np.eye(d)
        precision = np.linalg.inv(cov)
        precision = (precision + precision.T) / 2.0
        self.U = np.asarray(np.linalg.cholesky(precision).T, dtype=np.float64)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance (float64, higher = more anomalous).

        Raises:
            NotFittedError: before fit.
            DetectMisuse: bad features.
        """
        std = self._require_fitted()
        Z = std.transform(check_features(X, self.mu.shape[0]))
        return np.asarray(np.sum(((Z - self.mu) @ self.U.T) ** 2, axis=1), dtype=np.float64)

    def model_bytes(self) -> int:
        """Bytes of parameters as float32 (standardiser, centre, packed factor, threshold)."""
        self._require_fitted()
        d = int(self.mu.shape[0])
        return 4 * (3 * d + d * (d + 1) // 2 + 1)

    def ops_per_inference(self) -> int:
        """Standardise d, d(d+1)/2 multiply-adds, d squares."""
        self._require_fitted()
        d = int(self.mu.shape[0])
        return d + d * (d + 1) // 2 + d

    def to_json(self) -> dict[str, Any]:
        std = self._require_fitted()
        return {
            "threshold": self.threshold,
            **self._calibration_json(),
            "ridge": self.ridge,
            "standardizer": std.to_json(),
            "mu": self.mu.tolist(),
            "U": self.U.tolist(),
        }

    @classmethod
    def from_doc(cls, doc: Doc) -> MahalanobisDetector:
        mu = doc.get("mu")
        if not isinstance(mu, list) or not 1 <= len(mu) <= LIMITS.max_features:
            raise doc.fail("mu", f"must be a list of 1..{LIMITS.max_features} numbers")
        d = len(mu)
        ridge = doc.number("ridge")
        if not 0 < ridge < 1e6:
            raise doc.fail("ridge", f"{ridge} is not a positive number below 1e6")
        model = cls(ridge=ridge)
        model.standardizer = Standardizer.from_doc(doc.section("standardizer"), d)
        model.mu = doc.floats("mu", (d,))
        model.U = doc.floats("U", (d, d))
        if np.any(np.tril(model.U, -1) != 0):
            raise doc.fail("U", "is not upper triangular")
        model.threshold = doc.number("threshold")
        model.calibration = calibration_from_doc(doc)
        return model

    def save(self, path: Path) -> None:
        """Write the detector to ``path`` atomically. Raises NotFittedError, OSError."""
        write_model(path, self.name, self.to_json())

    @classmethod
    def load(cls, path: Path) -> MahalanobisDetector:
        """Read a detector saved by :meth:`save`. Raises ModelFileError."""
        kind, doc = read_model(path)
        if kind != cls.name:
            raise ModelFileError(path, f"holds a {kind!r} detector, not {cls.name!r}")
        return cls.from_doc(doc)
