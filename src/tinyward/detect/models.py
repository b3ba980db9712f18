"""Anomaly detectors learned from benign feature vectors only.

Public API::

    det = make_detector("autoencoder-int8")      # or "autoencoder", "mahalanobis", ...
    det.fit(X_benign, target_fpr=0.001)         # threshold calibrated on the later benign rows
    scores = det.score(X)                       # float64, higher = more anomalous
    alarms = scores > det.threshold
    labels = det.predict(X)                     # scikit-learn's: -1 anomaly, +1 normal
    margin = det.decision_function(X)           # threshold - score: < 0 is an anomaly
    det.save(path); det = load_detector(path)   # load refuses a bad file with a reason

Every detector takes float64 feature vectors of shape (n, d). The ``-int8`` kinds score
with a pure integer reference (``tinyward.detect.int8``) that is bit-exact with the C99
export (``tinyward.detect.export_c``); their scores are int32 values returned as float64.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tinyward.detect._float import AutoencoderDetector, MahalanobisDetector
from tinyward.detect._int8_models import Int8AutoencoderDetector, Int8MahalanobisDetector
from tinyward.detect._modelfile import Doc, read_model
from tinyward.detect.errors import DetectMisuse, ModelFileError

__all__ = [
    "KINDS",
    "AutoencoderDetector",
    "Detector",
    "Int8AutoencoderDetector",
    "Int8MahalanobisDetector",
    "MahalanobisDetector",
    "detector_from_doc",
    "load_detector",
    "make_detector",
]


@runtime_checkable
class Detector(Protocol):
    """What every tinyward detector offers (see the module docstring)."""

    name: str
    threshold: float

    def fit(
        self,
        X: np.ndarray,
        *,
        target_fpr: float = 0.001,
        holdout_fraction: float = 0.25,
        seed: int = 0,
        threshold_method: str = "pot",
        on_insufficient: str = "warn",
    ) -> Detector: ...

    def score(self, X: np.ndarray) -> np.ndarray: ...

    def decision_function(self, X: np.ndarray) -> np.ndarray: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...

    def save(self, path: Path) -> None: ...

    def to_json(self) -> dict[str, Any]: ...

    @classmethod
    def load(cls, path: Path) -> Detector: ...

    def model_bytes(self) -> int: ...

    def ops_per_inference(self) -> int: ...


KINDS: dict[str, Callable[..., Any]] = {
    AutoencoderDetector.name: AutoencoderDetector,
    MahalanobisDetector.name: MahalanobisDetector,
    Int8AutoencoderDetector.name: Int8AutoencoderDetector,
    Int8MahalanobisDetector.name: Int8MahalanobisDetector,
}


def make_detector(kind: str, **kw: Any) -> Detector:
    """A new, unfitted detector of ``kind`` (one of :data:`KINDS`).

    Keyword arguments go to the detector's constructor (e.g. ``hidden=4`` for an
    autoencoder, ``ridge=1e-3`` for Mahalanobis).

    Raises:
        DetectMisuse: unknown kind or unknown keyword.
    """
    try:
        factory = KINDS[kind]
    except KeyError:
        raise DetectMisuse(
            f"unknown detector kind {kind!r}; choose one of {sorted(KINDS)}"
        ) from None
    try:
        detector: Detector = factory(**kw)
    except TypeError as error:
        raise DetectMisuse(f"{kind}: {error}") from None
    return detector


def load_detector(path: Path) -> Detector:
    """Load any detector saved by ``save``; the file is treated as hostile input.

    Raises:
        ModelFileError: unreadable, truncated, not a model, unknown kind, bad shapes or
            values; the message names the file and the offending key.
    """
    kind, doc = read_model(Path(path))
    return detector_from_doc(path, kind, doc)


def detector_from_doc(path: Path, kind: str, doc: Doc) -> Detector:
    """Build the detector of ``kind`` from the checked document ``doc`` read from ``path``.

    Raises:
        ModelFileError: unknown kind, bad shapes or values.
    """
    factory = KINDS.get(kind)
    if factory is None:
        raise ModelFileError(path, f"unknown detector kind {kind!r}; known: {sorted(KINDS)}")
    detector: Detector = factory.from_doc(doc)  # type: ignore[attr-defined]
    return detector
