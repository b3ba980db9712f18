"""Published detectors to compare against, behind tinyward's Detector interface.

- :class:`KitNETBaseline`: KitNET (Mirsky et al., NDSS 2018), the ensemble of small
  autoencoders from Kitsune, as implemented in PyPI's ``pysad`` (``pysad.models.KitNet``,
  a port of the authors' KitNET-py). Trained online on the benign training rows (feature
  mapping grace ~10 % of them, autoencoder grace the rest), then it only scores.
- :class:`HalfSpaceTreesBaseline`: river's ``HalfSpaceTrees`` (inputs scaled to [0, 1]
  with the training minimum and maximum, as river requires).
- :class:`IsolationForestBaseline`: scikit-learn's ``IsolationForest``.

They are fitted on the same benign feature rows as tinyward's detectors. Their threshold
is the ``1 - target_fpr`` quantile of their scores on the training rows. ``pysad`` and
``river`` are development dependencies, imported only here.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _threshold(scores: np.ndarray, target_fpr: float) -> float:
    return float(np.quantile(scores, 1.0 - target_fpr))


class KitNETBaseline:
    name = "kitnet (pysad)"

    def __init__(self, max_size_ae: int = 10, seed: int = 0) -> None:
        self.max_size_ae = max_size_ae
        self.seed = seed
        self.threshold = float("inf")

    def fit(
        self,
        X: np.ndarray,
        *,
        target_fpr: float = 0.001,
        holdout_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
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
        self.threshold = _threshold(self.score(X[-max(1, int(n * holdout_fraction)) :]), target_fpr)

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


class HalfSpaceTreesBaseline:
    name = "river HalfSpaceTrees"

    def __init__(
        self, n_trees: int = 25, height: int = 15, window_size: int = 250, seed: int = 0
    ) -> None:
        self.n_trees, self.height, self.window_size, self.seed = n_trees, height, window_size, seed
        self.threshold = float("inf")

    def _dicts(self, X: np.ndarray) -> list[dict[int, float]]:
        scaled = np.clip((X - self.low) / self.span, 0.0, 1.0)
        return [dict(enumerate(row.tolist())) for row in scaled]

    def fit(
        self,
        X: np.ndarray,
        *,
        target_fpr: float = 0.001,
        holdout_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        from river.anomaly import HalfSpaceTrees

        self.low = X.min(axis=0)
        self.span = np.maximum(X.max(axis=0) - self.low, 1e-12)
        self.model = HalfSpaceTrees(
            n_trees=self.n_trees, height=self.height, window_size=self.window_size, seed=self.seed
        )
        for row in self._dicts(X):
            self.model.learn_one(row)  # type: ignore[no-untyped-call]
        self.threshold = _threshold(
            self.score(X[-max(1, int(len(X) * holdout_fraction)) :]), target_fpr
        )

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


class IsolationForestBaseline:
    name = "sklearn IsolationForest"

    def __init__(self, n_estimators: int = 100, seed: int = 0) -> None:
        self.n_estimators, self.seed = n_estimators, seed
        self.threshold = float("inf")

    def fit(
        self,
        X: np.ndarray,
        *,
        target_fpr: float = 0.001,
        holdout_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        from sklearn.ensemble import IsolationForest

        self.model = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed)
        self.model.fit(X)
        self.threshold = _threshold(self.score(X), target_fpr)

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
