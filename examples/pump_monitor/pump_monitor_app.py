"""Pump monitor: the sandboxed application (numpy only).

It learns the pump it is mounted on during a calibration period and then reports whether
the pump still behaves that way, one frame (8 sensor values) a second:

1. calibration: the first ``calibration_frames`` frames (400, the SKAB protocol's training
   rows) are kept and ``normal`` is reported; at the end the detector is fitted on them and
   the raw frames are dropped;
2. detection: every frame is scored and ``anomaly`` reported while the score is over the
   limit fitted in calibration.

Two detectors, chosen by ``method`` in ``model.npz``:

- ``0`` :class:`ControlChartMonitor` (shipped): the published SKAB T²+Q control chart —
  standard scaling, PCA keeping 85 % of the variance, Hotelling's T² and the squared
  prediction error Q with upper control limits at p = 0.999, a causal median of 5 —
  ported to numpy so that it can be fitted on the device. Fitted state at most 8 + 8 + 8
  (scaling, centre) + 8·7 (axes) + 7·7 (inverse covariance) + 2 (limits) + 10 (median
  window) = 141 numbers; the model file holds 12 constants.
- ``1`` :class:`PumpMonitor`: smoothed T²+Q (an exponential moving average on the score or,
  as a multivariate EWMA chart, on the sensors) with per-sensor extra variance, its
  hyper-parameters searched by ``train.py --method ewma`` on normal data with synthetic
  faults. It scored lower (see README) and is kept for comparison.

Either way the calibration buffer is 400 x 8 float32 (12.8 KB), freed once fitted.
Results are emitted only when the state changes (and once at start), so the result rate
never exceeds the frame rate: at most 60 a minute.
"""

from __future__ import annotations

import pathlib

import numpy as np

N_CHANNELS = 8
STATES = ("normal", "anomaly")


class PumpMonitor:
    """Online per-pump calibration followed by T²+Q detection with an EMA smoother."""

    def __init__(
        self,
        *,
        calibration_frames: int = 400,
        var_explained: float = 0.9,
        ema_alpha: float = 0.1,
        margin: float = 1.5,
        smooth_input: bool = False,
        extra: np.ndarray | None = None,
    ) -> None:
        if calibration_frames < N_CHANNELS + 2:
            raise ValueError("calibration_frames must exceed the number of channels + 1")
        if not 0.0 < var_explained <= 1.0 or not 0.0 < ema_alpha <= 1.0 or margin <= 0.0:
            raise ValueError("var_explained and ema_alpha must be in (0, 1], margin > 0")
        self.calibration_frames = int(calibration_frames)
        self.var_explained = float(var_explained)
        self.ema_alpha = float(ema_alpha)
        self.margin = float(margin)
        self.smooth_input = bool(smooth_input)
        # Per-sensor variance (in calibration units) that a longer normal recording shows
        # beyond what the calibration frames show; learnt by train.py.
        self.extra = np.zeros(N_CHANNELS) if extra is None else np.asarray(extra, np.float64)
        if self.extra.shape != (N_CHANNELS,) or not np.all(self.extra >= 0.0):
            raise ValueError(f"extra must hold {N_CHANNELS} variances >= 0")
        self._buffer: np.ndarray | None = np.zeros((self.calibration_frames, N_CHANNELS), np.float32)
        self._seen = 0
        self._ema_score = 0.0
        self._ema_input = np.zeros(N_CHANNELS)
        self.state = "normal"
        self._reported: str | None = None
        # Fitted per pump at the end of calibration.
        self.mean = np.zeros(N_CHANNELS)
        self.scale = np.ones(N_CHANNELS)
        self.axes = np.zeros((N_CHANNELS, 0))
        self.eigenvalues = np.zeros(0)
        self.t2_ref = 1.0
        self.q_ref = 1.0
        self.threshold = np.inf
        self.calibration_peak = np.inf

    @property
    def calibrated(self) -> bool:
        return self._buffer is None

    def process(self, frame: np.ndarray) -> dict[str, str] | None:
        """Take one ``(1, 8)`` frame; return ``{"state": ...}`` when the state changes.

        Raises:
            ValueError: the frame does not hold 8 finite values.
        """
        x = _check_frame(frame)
        if self._buffer is not None:
            self._buffer[self._seen] = x
            self._seen += 1
            if self._seen == self.calibration_frames:
                self.fit(self._buffer.astype(np.float64))
                self._buffer = None  # the raw calibration data are forgotten
            self.state = "normal"
        else:
            self.state = "anomaly" if self.step(x) > self.threshold else "normal"
        if self.state != self._reported:
            self._reported = self.state
            return {"state": self.state}
        return None

    def step(self, x: np.ndarray) -> float:
        """Advance the smoother by one raw frame ``(8,)``; the score to compare with the threshold."""
        z = (x - self.mean) / self.scale
        a = self.ema_alpha
        if self.smooth_input:
            self._ema_input += a * (z - self._ema_input)
            return float(self.score_standardised(self._ema_input[None, :])[0])
        self._ema_score += a * (float(self.score_standardised(z[None, :])[0]) - self._ema_score)
        return self._ema_score

    def score_standardised(self, z: np.ndarray) -> np.ndarray:
        """Unsmoothed T²/E[T²] + Q/E[Q] per row of standardised values ``(n, 8)``."""
        t = z @ self.axes
        t2 = np.sum(t * t / self.eigenvalues, axis=1)
        residual = z - t @ self.axes.T
        q = np.sum(residual * residual, axis=1)
        return t2 / self.t2_ref + q / self.q_ref

    def warm_up(self, n: int) -> int:
        """Rows at the start of calibration the smoother needs before its output means much."""
        return min(round(2.0 / self.ema_alpha), n // 2)

    def fit(self, rows: np.ndarray) -> None:
        """Fit scaling, PCA and threshold on calibration rows ``(n, 8)``, n > 9."""
        self.mean = rows.mean(axis=0)
        # A sensor that did not move during calibration (quantised, or stuck) must not
        # divide by ~0: floor its scale at a small fraction of its level.
        floor = 1e-3 * np.maximum(np.abs(self.mean), 1e-3)
        self.scale = np.maximum(rows.std(axis=0, ddof=1), floor)
        z = (rows - self.mean) / self.scale
        warm = self.warm_up(len(z))
        a = self.ema_alpha
        if self.smooth_input:
            smoothed = np.empty_like(z)
            e = np.zeros(N_CHANNELS)
            for i, row in enumerate(z):
                e += a * (row - e)
                smoothed[i] = e
            self._ema_input = e.copy()
            basis = smoothed[warm:]
        else:
            basis = z
        # The statistic's calibration covariance plus the longer-term wander per sensor.
        cov = np.cov(basis, rowvar=False) + np.diag(self.extra)
        eigenvalues, vectors = np.linalg.eigh(cov)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues = np.maximum(eigenvalues[order], 1e-9)
        vectors = vectors[:, order]
        share = np.cumsum(eigenvalues) / np.sum(eigenvalues)
        k = int(np.searchsorted(share, self.var_explained - 1e-12) + 1)
        k = min(k, N_CHANNELS - 1)  # keep a residual space for Q
        self.axes = vectors[:, :k]
        self.eigenvalues = eigenvalues[:k]
        # Expected T² and Q under that covariance, so both halves of the score weigh ~1.
        self.t2_ref = float(k)
        self.q_ref = float(max(np.sum(eigenvalues[k:]), 1e-9))
        raw = self.score_standardised(basis)
        if self.smooth_input:
            calibration_scores = raw
        else:
            calibration_scores = np.empty_like(raw)
            e_score = float(np.mean(raw))
            for i, value in enumerate(raw):
                e_score += a * (value - e_score)
                calibration_scores[i] = e_score
            self._ema_score = e_score
            calibration_scores = calibration_scores[warm:]
        # The threshold: the calibration rows' own peak score, with a margin.
        self.calibration_peak = float(np.max(calibration_scores))
        self.threshold = self.margin * self.calibration_peak


class ControlChartMonitor:
    """The published SKAB T²+Q recipe, ported to numpy and run online.

    At the end of calibration: standard scaling (population standard deviation), a PCA
    keeping the fewest components that explain more than ``explained_variance`` of the
    variance, T² with the inverse covariance of the calibration scores, Q in the residual
    space; upper control limits at confidence ``p``: T² from the F distribution (the
    quantile for each possible number of components comes precomputed in the model file,
    since there is no scipy on the device), Q by Jackson & Mudholkar computed as SKAB's
    code does. Detection: the causal median of the last ``window`` values of each
    statistic; ``anomaly`` when either exceeds its limit.
    """

    def __init__(
        self,
        *,
        calibration_frames: int = 400,
        explained_variance: float = 0.85,
        window: int = 5,
        t2_quantiles: np.ndarray,
        q_normal_quantile: float,
    ) -> None:
        if calibration_frames < N_CHANNELS + 2 or window < 1:
            raise ValueError("calibration_frames must exceed channels + 1 and window be >= 1")
        if not 0.0 < explained_variance < 1.0:
            raise ValueError("explained_variance must be in (0, 1)")
        self.t2_quantiles = np.asarray(t2_quantiles, dtype=np.float64)
        if self.t2_quantiles.shape != (N_CHANNELS + 1,):
            raise ValueError(f"t2_quantiles must hold {N_CHANNELS + 1} values (index = components)")
        self.calibration_frames = int(calibration_frames)
        self.explained_variance = float(explained_variance)
        self.window = int(window)
        self.q_normal_quantile = float(q_normal_quantile)
        self._buffer: np.ndarray | None = np.zeros((self.calibration_frames, N_CHANNELS), np.float32)
        self._seen = 0
        self._recent = np.full((self.window, 2), np.nan)  # last T², Q values
        self.state = "normal"
        self._reported: str | None = None
        self.mean = np.zeros(N_CHANNELS)
        self.scale = np.ones(N_CHANNELS)
        self.axes = np.zeros((N_CHANNELS, 0))
        self.score_mean = np.zeros(0)
        self.inv_cov = np.zeros((0, 0))
        self.t2_ucl = np.inf
        self.q_ucl = np.inf

    @property
    def calibrated(self) -> bool:
        return self._buffer is None

    def process(self, frame: np.ndarray) -> dict[str, str] | None:
        """Take one ``(1, 8)`` frame; return ``{"state": ...}`` when the state changes.

        Raises:
            ValueError: the frame does not hold 8 finite values.
        """
        x = _check_frame(frame)
        if self._buffer is not None:
            self._buffer[self._seen] = x
            self._seen += 1
            if self._seen == self.calibration_frames:
                self.fit(self._buffer.astype(np.float64))
                self._buffer = None  # the raw calibration data are forgotten
            self.state = "normal"
        else:
            self._recent = np.roll(self._recent, -1, axis=0)
            self._recent[-1] = self.statistics(x[None, :])[0]
            t2, q = np.median(self._recent, axis=0)  # nan until the window is full
            self.state = "anomaly" if (t2 > self.t2_ucl or q > self.q_ucl) else "normal"
        if self.state != self._reported:
            self._reported = self.state
            return {"state": self.state}
        return None

    def statistics(self, rows: np.ndarray) -> np.ndarray:
        """T² and Q per raw row ``(n, 8)`` -> ``(n, 2)``."""
        z = (rows - self.mean) / self.scale
        t = (z - self.score_mean) @ self.axes
        t2 = np.einsum("ij,jk,ik->i", t, self.inv_cov, t)
        residual = z - z @ self.axes @ self.axes.T
        return np.stack([t2, np.sum(residual * residual, axis=1)], axis=1)

    def fit(self, rows: np.ndarray) -> None:
        """Scaling, PCA, control limits from calibration rows ``(n, 8)``."""
        n = len(rows)
        self.mean = rows.mean(axis=0)
        sd = rows.std(axis=0)
        # A sensor that never moved in calibration (SKAB's code drops it; no SKAB run has
        # one) gets a tiny scale, so that if it ever moves, Q sees it.
        self.scale = np.where(sd > 0, sd, np.maximum(1e-3 * np.abs(self.mean), 1e-6))
        z = (rows - self.mean) / self.scale
        self.score_mean = z.mean(axis=0)
        centred = z - self.score_mean
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        total = float(np.sum(singular**2))
        if total > 0:
            ratio = np.cumsum(singular**2) / total
            m = int(np.searchsorted(ratio, self.explained_variance, side="right") + 1)
        else:  # nothing moved at all during calibration
            m = 1
        m = min(m, N_CHANNELS - 1)
        self.axes = vt[:m].T
        t = centred @ self.axes
        # pinv: equal to inv for the regular case, defined for a degenerate calibration.
        self.inv_cov = np.linalg.pinv(np.atleast_2d(np.cov(t.T)))
        self.t2_ucl = m * (n - 1) * (n + 1) / (n * (n - m)) * float(self.t2_quantiles[m])
        # Jackson & Mudholkar, as SKAB's code computes it (theta_i = (sum of residual
        # eigenvalues)**i, eigenvalues in the order eig returns them).
        w = np.linalg.eig(np.cov(z.T))[0].real
        s = float(np.sum(w[m:]))
        theta1, theta2, theta3 = s, s**2, s**3
        if theta1 > 1e-12:
            h0 = 1 - 2 * theta1 * theta3 / (3 * theta2**2)
            c = self.q_normal_quantile
            self.q_ucl = theta1 * (
                1 + c * h0 * np.sqrt(2 * theta2) / theta1 + theta2 * h0 * (h0 - 1) / theta1**2
            ) ** (1 / h0)
        else:  # no residual variance in calibration: any residual is news
            self.q_ucl = 1e-9
        if self.t2_ucl <= 0 or not np.isfinite(self.t2_ucl):
            self.t2_ucl = 1e-9
        # The median window starts on the last calibration rows, as in SKAB's batch code.
        self._recent = self.statistics(rows[-self.window :]) if n >= self.window else self._recent


def _check_frame(frame: np.ndarray) -> np.ndarray:
    x = np.asarray(frame, dtype=np.float64).reshape(-1)
    if x.shape != (N_CHANNELS,):
        raise ValueError(f"expected {N_CHANNELS} values per frame, got {x.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError("frame holds a value that is not finite")
    return x


def factory(model_paths: list[pathlib.Path]) -> PumpMonitor | ControlChartMonitor:
    """Entry point: build the monitor ``model.npz`` describes.

    ``method`` 0 is the control chart (:class:`ControlChartMonitor`), 1 the smoothed
    T²+Q (:class:`PumpMonitor`).

    Raises:
        ValueError: the model file lacks a parameter or holds an invalid one.
        OSError: the model file cannot be read.
    """
    with np.load(model_paths[0], allow_pickle=False) as model:
        try:
            method = int(model["method"])
            if method == 0:
                return ControlChartMonitor(
                    calibration_frames=int(model["calibration_frames"]),
                    explained_variance=float(model["explained_variance"]),
                    window=int(model["window"]),
                    t2_quantiles=np.asarray(model["t2_quantiles"], dtype=np.float64),
                    q_normal_quantile=float(model["q_normal_quantile"]),
                )
            if method == 1:
                return PumpMonitor(
                    calibration_frames=int(model["calibration_frames"]),
                    var_explained=float(model["var_explained"]),
                    ema_alpha=float(model["ema_alpha"]),
                    margin=float(model["margin"]),
                    smooth_input=bool(model["smooth_input"]),
                    extra=np.asarray(model["extra"], dtype=np.float64),
                )
        except KeyError as missing:
            raise ValueError(f"{model_paths[0]}: model lacks {missing}") from None
    raise ValueError(f"{model_paths[0]}: unknown method {method}")
