"""Detectors that score with the int8 integer reference (bit-exact with the C export).

Each wraps its float model: fit trains the float model on the training part, quantises
it, and calibrates an int32 threshold on the int8 scores of the later benign rows
(:mod:`tinyward.detect.threshold`). The
file keeps both the float model (for comparison) and the exact integers that were used.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Self

import numpy as np

from tinyward.detect._common import (
    OutlierDetectorAPI,
    calibrate_threshold,
    calibration_from_doc,
    calibration_split,
    check_features,
    pooled_calibration_scores,
)
from tinyward.detect._float import AutoencoderDetector, MahalanobisDetector
from tinyward.detect._modelfile import Doc, read_model, write_model
from tinyward.detect.errors import DetectMisuse, ModelFileError, NotFittedError
from tinyward.detect.int8 import INT32_MAX, QAutoencoder, QMahalanobis


class _Int8Base(OutlierDetectorAPI):
    name = ""
    integer_scores = True  # thresholds are rounded down to an int32
    float_model: Any
    quantized: Any

    def __init__(self) -> None:
        self.threshold = math.inf
        self.target_fpr: float | None = None  # as given to fit; stated in the C header

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
        """Fit the float model on the earlier benign rows of ``X``, quantise it, and
        calibrate the threshold on the int8 scores of the later ``holdout_fraction``
        (arguments, ``new_peers`` included, as the float models' ``fit``).

        Returns the detector itself (scikit-learn's convention).

        Raises:
            CalibrationRefused: too little calibration data and ``on_insufficient="refuse"``.
            DetectMisuse: bad features or parameters, or a model that cannot be quantised.
        """
        X = check_features(X)
        train, hold = calibration_split(X, holdout_fraction, seed, threshold_method)
        self.float_model.fit_weights(train, seed)
        with warnings.catch_warnings():  # the int8 calibration below says the same
            warnings.simplefilter("ignore")
            float_scores, n_new = pooled_calibration_scores(
                self.float_model.score, hold, new_peers, X.shape[1])
            self.float_model.calibration = calibrate_threshold(
                float_scores, target_fpr, method=threshold_method,
                on_insufficient="warn", n_fit=len(train), n_new_peer_rows=n_new)
        self.float_model.threshold = self.float_model.calibration.threshold
        self.quantized = self._quantize()
        self.calibration_scores, self.n_new_peer_rows = pooled_calibration_scores(
            self.score, hold, new_peers, X.shape[1])
        self.calibration = calibrate_threshold(
            self.calibration_scores, target_fpr, method=threshold_method,
            on_insufficient=on_insufficient, n_fit=len(train), integer=True, what=self.name,
            n_new_peer_rows=self.n_new_peer_rows)
        self.threshold = max(0.0, self.calibration.threshold)
        self.target_fpr = target_fpr
        return self

    def _quantize(self) -> Any:
        raise NotImplementedError

    def _require_fitted(self) -> Any:
        if self.quantized is None:
            raise NotFittedError(f"{self.name}: call fit() before using the detector")
        return self.quantized

    def quantize_features(self, X: np.ndarray) -> np.ndarray:
        """int8 features exactly as the C helper ``<prefix>_quantize`` makes them."""
        q = self._require_fitted()
        return np.asarray(q.inq.quantize(check_features(X, q.n_features)), dtype=np.int8)

    def score_q(self, Xq: np.ndarray) -> np.ndarray:
        """int32 scores of already quantised int8 vectors (the bit-exact reference)."""
        return np.asarray(self._require_fitted().score_q(Xq), dtype=np.int32)

    def score(self, X: np.ndarray) -> np.ndarray:
        """int32 scores as float64 (higher = more anomalous).

        Raises:
            NotFittedError: before fit.
            DetectMisuse: bad features.
        """
        return self.score_q(self.quantize_features(X)).astype(np.float64)

    def threshold_int(self) -> int:
        """The threshold as the int32 that the C code compares with (alarm: score > it)."""
        self._require_fitted()
        return int(min(self.threshold, INT32_MAX))

    def model_bytes(self) -> int:
        """Bytes of the exported C constant tables, threshold included."""
        return int(self._require_fitted().const_bytes()) + 4

    def ops_per_inference(self) -> int:
        return int(self._require_fitted().ops())

    def to_json(self) -> dict[str, Any]:
        """The body of the model file (see :mod:`tinyward.detect._modelfile`)."""
        q = self._require_fitted()
        return {"threshold": self.threshold, "target_fpr": self.target_fpr,
                **self._calibration_json(),
                "float": self.float_model.to_json(), "int8": q.to_json()}

    def save(self, path: Path) -> None:
        """Write the detector atomically. Raises NotFittedError, OSError."""
        write_model(path, self.name, self.to_json())

    @classmethod
    def load(cls, path: Path) -> Any:
        """Read a detector saved by :meth:`save`. Raises ModelFileError."""
        kind, doc = read_model(path)
        if kind != cls.name:
            raise ModelFileError(path, f"holds a {kind!r} detector, not {cls.name!r}")
        return cls.from_doc(doc)

    @classmethod
    def from_doc(cls, doc: Doc) -> Any:
        raise NotImplementedError

    def _load_threshold(self, doc: Doc) -> None:
        threshold = doc.number("threshold")
        if threshold != int(threshold) or not 0 <= threshold <= INT32_MAX:
            raise doc.fail("threshold", "must be an integer score in [0, 2^31 - 1]")
        self.threshold = threshold
        if doc.data.get("target_fpr") is not None:  # optional: older files lack it
            target = doc.number("target_fpr")
            if not 0.0 < target < 1.0:
                raise doc.fail("target_fpr", "must be in (0, 1)")
            self.target_fpr = target
        self.calibration = calibration_from_doc(doc)


class Int8AutoencoderDetector(_Int8Base):
    """The autoencoder, scored in int8 (see ``tinyward.detect.int8``)."""

    name = "autoencoder-int8"

    def __init__(self, hidden: int | None = None, **kw: Any) -> None:
        super().__init__()
        self.float_model = AutoencoderDetector(hidden, **kw)
        self.quantized: QAutoencoder | None = None

    def _quantize(self) -> QAutoencoder:
        f = self.float_model
        std = f._require_fitted()
        return QAutoencoder.from_float(std.mean, std.scale, f.W1, f.b1, f.W2, f.b2)

    @classmethod
    def from_doc(cls, doc: Doc) -> Int8AutoencoderDetector:
        model = cls()
        model.float_model = AutoencoderDetector.from_doc(doc.section("float"))
        h, d = model.float_model.W1.shape
        model.quantized = QAutoencoder.from_doc(doc.section("int8"), d, h)
        model._load_threshold(doc)
        return model


class Int8MahalanobisDetector(_Int8Base):
    """The Mahalanobis distance, scored in int8 (see ``tinyward.detect.int8``)."""

    name = "mahalanobis-int8"

    def __init__(self, ridge: float = 1e-3) -> None:
        # ridge >= 1e-3 bounds the precision's eigenvalues by 1000, hence every entry of
        # its Cholesky factor by ~31.6, which keeps the requantisation factors below 0.5.
        if not (isinstance(ridge, (int, float)) and ridge >= 1e-3):
            raise DetectMisuse(f"mahalanobis-int8 needs ridge >= 1e-3 (got {ridge})")
        super().__init__()
        self.float_model = MahalanobisDetector(ridge)
        self.quantized: QMahalanobis | None = None

    def _quantize(self) -> QMahalanobis:
        f = self.float_model
        std = f._require_fitted()
        return QMahalanobis.from_float(std.mean, std.scale, f.mu, f.U)

    @classmethod
    def from_doc(cls, doc: Doc) -> Int8MahalanobisDetector:
        model = cls()
        model.float_model = MahalanobisDetector.from_doc(doc.section("float"))
        model.quantized = QMahalanobis.from_doc(doc.section("int8"), model.float_model.mu.shape[0])
        model._load_threshold(doc)
        return model
