"""Pump monitor: the sandboxed application (numpy only).

It learns the pump it is mounted on during a calibration period and then reports whether
the pump still behaves that way. Per frame (8 sensor values, 1 Hz):

1. calibration (the first ``calibration_frames`` frames, 400 in the SKAB protocol): keep the
   frames, report ``normal``; at the end, standardise each sensor by its calibration mean
   and standard deviation, fit a PCA on the calibration frames and set the alarm threshold
   from the calibration frames' own scores;
2. detection: score each frame with Hotelling's T² (inside the PCA subspace) plus the
   squared prediction error Q (outside it), each divided by its expected value, and report
   ``anomaly`` while the score is above the threshold.

An exponential moving average (factor ``ema_alpha``) is applied either to the score
(``smooth_input = 0``: smoothed T²+Q) or to the standardised sensors before scoring
(``smooth_input = 1``: a multivariate EWMA control chart, the textbook chart for small
sustained shifts). Either way a per-sensor allowance ``extra`` is added to the calibration
covariance for the slow wander that 400 s cannot show (the water temperature, for one).
All of these come from ``model.npz``, which ``train.py`` derives from the anomaly-free
recording only.

Fitted state per pump: mean and scale (8 + 8), k principal axes (8·k), k eigenvalues, two
reference values, threshold and smoother state — at most 92 numbers — plus a 400 x 8
float32 calibration buffer (12.8 KB), freed once fitted.

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
        x = np.asarray(frame, dtype=np.float64).reshape(-1)
        if x.shape != (N_CHANNELS,):
            raise ValueError(f"expected {N_CHANNELS} values per frame, got {x.size}")
        if not np.all(np.isfinite(x)):
            raise ValueError("frame holds a value that is not finite")
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


def factory(model_paths: list[pathlib.Path]) -> PumpMonitor:
    """Entry point: build a monitor from the hyper-parameters in ``model.npz``.

    Raises:
        ValueError: the model file lacks a hyper-parameter or holds an invalid one.
        OSError: the model file cannot be read.
    """
    with np.load(model_paths[0], allow_pickle=False) as model:
        try:
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
