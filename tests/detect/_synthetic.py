"""Synthetic benign/attack feature vectors with a fixed seed (no dependency on features)."""

from __future__ import annotations

import numpy as np


def make_data(
    d: int = 16, n_benign: int = 6000, n_test: int = 2000, n_attack: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Benign vectors on a 4-dimensional linear manifold plus noise; attacks leave it."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, 4))
    offset = rng.uniform(-3, 50, size=d)

    def benign(n: int) -> np.ndarray:
        return rng.normal(size=(n, 4)) @ mixing.T + 0.1 * rng.normal(size=(n, d)) + offset

    attack = benign(n_attack)
    attack[:, :3] += rng.normal(size=(n_attack, 3))
    return benign(n_benign), benign(n_test), attack
