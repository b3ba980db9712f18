"""The published T²+Q baseline, re-run in this harness to check the harness against the
leaderboard (evaluation only: scikit-learn and scipy, never part of the app).

Re-implemented from the recipe in the SKAB repository (``notebooks/t2_with_q_SKAB.ipynb``
with ``core/t2.py``, https://github.com/waico/SKAB): fit on the run's first 400 rows with
standard scaling and a PCA keeping 85 % of the variance; T² upper control limit from the
F distribution at p = 0.999, Q limit by Jackson & Mudholkar at the same p (computed the
way that code does, including summing the residual eigenvalues of an unsorted ``eig``
before raising to powers); a rolling median of 5 on both statistics over the whole run;
anomaly when either exceeds its limit. Only the test rows are scored, as in evaluate.py.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

EXPLAINED_VARIANCE = 0.85
P_VALUE = 0.999
WINDOW = 5


def _grid_quantile(cdf, p: float) -> float:
    """The largest point of linspace(0, 15, 10000) whose CDF is below p (as SKAB's code does)."""
    grid = np.linspace(0, 15, 10000)
    return float(grid[cdf(grid) < p][-1])


def _rolling_median(x: np.ndarray, window: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for i in range(window - 1, len(x)):
        out[i] = np.median(x[i - window + 1 : i + 1])
    return out


def predict(values: np.ndarray, train_rows: int = 400) -> np.ndarray:
    """Boolean anomaly prediction for every row of one run, fitted on its first rows."""
    train = values[:train_rows]
    # SKAB's code drops columns that are constant in training; none of the 34 runs has one.
    scaler = StandardScaler().fit(train)
    x_train = scaler.transform(train)
    pca = PCA(n_components=EXPLAINED_VARIANCE).fit(x_train)
    m = pca.n_components_
    n = len(x_train)
    inv_cov = np.linalg.inv(np.cov(pca.transform(x_train).T))
    vectors = pca.components_.T
    residual = np.eye(values.shape[1]) - vectors @ vectors.T
    c_t2 = _grid_quantile(lambda g: stats.f.cdf(g, m, n - m), P_VALUE)
    t2_ucl = m * (n - 1) * (n + 1) / (n * (n - m)) * c_t2
    w = np.linalg.eig(np.cov(x_train.T))[0].real
    s = float(np.sum(w[m:]))
    theta = [s, s**2, s**3]
    h0 = 1 - 2 * theta[0] * theta[2] / (3 * theta[1] ** 2)
    c_q = _grid_quantile(stats.norm.cdf, P_VALUE)
    q_ucl = theta[0] * (
        1 + c_q * h0 * np.sqrt(2 * theta[1]) / theta[0] + theta[1] * h0 * (h0 - 1) / theta[0] ** 2
    ) ** (1 / h0)
    x = scaler.transform(values)
    pc = pca.transform(x)
    t2 = _rolling_median(np.einsum("ij,jk,ik->i", pc, inv_cov, pc), WINDOW)
    q = _rolling_median(np.einsum("ij,jk,ik->i", x, residual, x), WINDOW)
    with np.errstate(invalid="ignore"):
        return (t2 > t2_ucl) | (q > q_ucl)
