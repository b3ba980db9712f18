"""Published detectors to compare against, behind tinyward's Detector interface.

- :class:`KitNETBaseline`: KitNET (Mirsky et al., NDSS 2018), the ensemble of small
  autoencoders from Kitsune, as implemented in PyPI's ``pysad`` (``pysad.models.KitNet``,
  a port of the authors' KitNET-py). Trained online on the benign training rows (feature
  mapping grace ~10 % of them, autoencoder grace the rest), then it only scores.
- :class:`HalfSpaceTreesBaseline`: river's ``HalfSpaceTrees`` (inputs scaled to [0, 1]
  with the training minimum and maximum, as river requires).
- :class:`IsolationForestBaseline`: scikit-learn's ``IsolationForest``.

They are fitted on the same benign feature rows as tinyward's detectors, and get their
threshold the same way, so the comparison is fair: fitted on the earlier rows, threshold
calibrated on the later ``holdout_fraction`` by :mod:`tinyward.detect.threshold`.
``threshold_method="unsafe-legacy"`` reproduces what each did before issue 13 (KitNET and
HalfSpaceTrees: trained on every row, the ``1 - target_fpr`` quantile of their scores on
the last 20 % of those same rows; IsolationForest: the quantile on all training rows),
for comparisons only. ``pysad`` and ``river`` are development dependencies, imported
only here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyward.detect._common import (
    OutlierDetectorAPI,
    calibrate_threshold,
    pooled_calibration_scores,
)
from tinyward.detect.threshold import Calibration, split_calibration


def _legacy_threshold(scores: np.ndarray, target_fpr: float) -> float:
    return float(np.quantile(scores, 1.0 - target_fpr))


class _Baseline(OutlierDetectorAPI):
    """Fit-then-calibrate shared by the baselines (see the module doc)."""

    name = ""

    def fit_model(self, X: np.ndarray) -> None:
        raise NotImplementedError

    def legacy_scores(self, X: np.ndarray, holdout_fraction: float) -> np.ndarray:
        """Scores the pre-issue-13 threshold was taken from (model fitted on all of X)."""
        return self.score(X[-max(1, int(len(X) * holdout_fraction)) :])

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
    ) -> None:
        """Fit on the earlier rows, calibrate on the later ``holdout_fraction`` pooled with
        ``new_peers`` when given (as tinyward's detectors), or the old way with
        ``threshold_method="unsafe-legacy"``."""
        del seed  # the baselines' own seeds are set in their constructors
        if threshold_method == "unsafe-legacy":
            self.fit_model(X)
            self.calibration_scores = self.legacy_scores(X, 0.2)
            z = _legacy_threshold(self.calibration_scores, target_fpr)
            self.calibration = Calibration(z, target_fpr, "unsafe-legacy", len(X),
                                           len(self.calibration_scores), 0)
            self.threshold = z
            return
        train, hold = split_calibration(X, holdout_fraction)
        self.fit_model(train)
        self.calibration_scores, self.n_new_peer_rows = pooled_calibration_scores(
            self.score, hold, new_peers, X.shape[1])
        self.calibration = calibrate_threshold(
            self.calibration_scores, target_fpr, method=threshold_method,
            on_insufficient=on_insufficient, n_fit=len(train), what=self.name,
            n_new_peer_rows=self.n_new_peer_rows)
        self.threshold = self.calibration.threshold

    def threshold_at(self, target_fpr: float) -> Calibration | None:
        cal = self.calibration
        scores = self.calibration_scores
        if cal is not None and cal.method == "unsafe-legacy" and scores is not None:
            z = _legacy_threshold(scores, target_fpr)
            return Calibration(z, target_fpr, "unsafe-legacy", cal.n_fit, cal.n_calibration, 0)
        return super().threshold_at(target_fpr)


class KitNETBaseline(_Baseline):
    name = "kitnet (pysad)"

    def __init__(self, max_size_ae: int = 10, seed: int = 0) -> None:
        self.max_size_ae = max_size_ae
        self.seed = seed
        self.threshold = float("inf")

    def fit_model(self, X: np.ndarray) -> None:
        from pysad.models import KitNet

        n = len(X)
        fm = max(100, n // 10)
        self.model = KitNet(  # type: ignore[no-untyped-call]
            max_size_ae=self.max_size_ae,
            grace_feature_mapping=fm,
            grace_anomaly_detector=n - fm,
            random_state=self.seed,
        )
        for row in X:
            self.model.fit_partial(row)  # type: ignore[no-untyped-call]

    def score(self, X: np.ndarray) -> np.ndarray:
        scores = (self.model.score_partial(row) for row in X)  # type: ignore[no-untyped-call]
        return np.fromiter(scores, dtype=np.float64, count=len(X))

    def _layers(self) -> list[Any]:
        kit = self.model.model
        return [layer.params for layer in (*kit.ensembleLayer, kit.outputLayer)]

    def model_bytes(self) -> int:
        # weights, both biases and the min/max normalisers, as float32
        return sum(
            4 * (a.n_visible * a.n_hidden + a.n_hidden + 3 * a.n_visible) for a in self._layers()
        )

    def ops_per_inference(self) -> int:
        # Counted as tinyward's own models are (tinyward.detect.cost): one op per
        # multiply-add, activation, normalisation or squared-error term, on the
        # clustering this KitNET actually learnt.
        from tinyward.detect.cost import kitnet_ops

        sizes = [layer.params.n_visible for layer in self.model.model.ensembleLayer]
        return int(kitnet_ops(sizes, max_ae=max(self.max_size_ae, *sizes)))


class HalfSpaceTreesBaseline(_Baseline):
    name = "river HalfSpaceTrees"

    def __init__(
        self, n_trees: int = 25, height: int = 15, window_size: int = 250, seed: int = 0
    ) -> None:
        self.n_trees, self.height, self.window_size, self.seed = n_trees, height, window_size, seed
        self.threshold = float("inf")

    def _dicts(self, X: np.ndarray) -> list[dict[int, float]]:
        scaled = np.clip((X - self.low) / self.span, 0.0, 1.0)
        return [dict(enumerate(row.tolist())) for row in scaled]

    def fit_model(self, X: np.ndarray) -> None:
        from river.anomaly import HalfSpaceTrees

        self.low = X.min(axis=0)
        self.span = np.maximum(X.max(axis=0) - self.low, 1e-12)
        self.model = HalfSpaceTrees(
            n_trees=self.n_trees, height=self.height, window_size=self.window_size, seed=self.seed
        )
        for row in self._dicts(X):
            self.model.learn_one(row)  # type: ignore[no-untyped-call]

    def score(self, X: np.ndarray) -> np.ndarray:
        rows = self._dicts(X)
        return np.array(
            [self.model.score_one(r) for r in rows],  # type: ignore[no-untyped-call]
            dtype=np.float64,
        )

    def model_bytes(self) -> int:
        nodes: int = self.n_trees * (2 ** (self.height + 1) - 1)
        return nodes * 16  # feature index, split value, two window masses (32-bit each)

    def ops_per_inference(self) -> int:
        return self.n_trees * (3 * self.height + 2)  # compare + descend per level, sum


class IsolationForestBaseline(_Baseline):
    name = "sklearn IsolationForest"

    def __init__(self, n_estimators: int = 100, seed: int = 0) -> None:
        self.n_estimators, self.seed = n_estimators, seed
        self.threshold = float("inf")

    def fit_model(self, X: np.ndarray) -> None:
        from sklearn.ensemble import IsolationForest

        self.model = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed)
        self.model.fit(X)

    def legacy_scores(self, X: np.ndarray, holdout_fraction: float) -> np.ndarray:
        return self.score(X)  # before issue 13: the quantile over every training row

    def score(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(-self.model.score_samples(X), dtype=np.float64)

    def model_bytes(self) -> int:
        nodes = sum(int(t.tree_.node_count) for t in self.model.estimators_)
        return nodes * 16  # feature, threshold, two child indices (32-bit each)

    def ops_per_inference(self) -> int:
        depth = np.mean([t.tree_.max_depth for t in self.model.estimators_])
        return int(self.n_estimators * (3 * depth + 2))


BASELINES = {
    "kitnet": KitNETBaseline,
    "halfspacetrees": HalfSpaceTreesBaseline,
    "isolationforest": IsolationForestBaseline,
}
