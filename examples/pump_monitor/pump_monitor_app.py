"""Pump monitor: the sandboxed application (numpy only).

It learns the pump it is mounted on during a calibration period and then reports whether
the pump still behaves that way. Per frame (8 sensor values, 1 Hz):

1. calibration (the first ``calibration_frames`` frames, 400 in the SKAB protocol): keep the
   frames, report ``normal``; at the end fit standardisation + PCA on them and set the alarm
   threshold from the calibration frames' own smoothed scores;
2. detection: score each frame with Hotelling's T² (inside the PCA subspace) and the squared
   prediction error Q (outside it), each divided by its mean on the calibration frames,
   smooth the sum with an exponential moving average, and report ``anomaly`` while the
   smoothed score is above the threshold.

The hyper-parameters (kept variance, smoothing, threshold margin) come from ``model.npz``,
written by ``train.py`` from the anomaly-free recording only. The fitted state per pump is
mean and scale (8 + 8), k principal axes (8·k), k eigenvalues, two reference values and a
threshold — at most 91 numbers — plus a 400 × 8 float32 calibration buffer (12.8 KB), which
is freed once fitted.

Results are emitted only when the state changes (and once at start), so the result rate
never exceeds the frame rate: at most 60 a minute.
"""

from __future__ import annotations

import pathlib

import numpy as np

N_CHANNELS = 8
STATES = ("normal", "anomaly")


class PumpMonitor:
    """Online per-pump calibration followed by T²+Q detection with a smoothed score."""

    def __init__(
        self,
        *,
        calibration_frames: int = 400,
        var_explained: float = 0.9,
        ema_alpha: float = 0.1,
        margin: float = 1.5,
        drift: np.ndarray | None = None,
    ) -> None:
        if calibration_frames < N_CHANNELS + 2:
            raise ValueError("calibration_frames must exceed the number of channels + 1")
        if not 0.0 < var_explained <= 1.0 or not 0.0 < ema_alpha <= 1.0 or margin <= 0.0:
            raise ValueError("var_explained and ema_alpha must be in (0, 1], margin > 0")
        self.calibration_frames = int(calibration_frames)
        self.var_explained = float(var_explained)
        self.ema_alpha = float(ema_alpha)
        self.margin = float(margin)
        # Per-channel allowance for slow wander that 400 s of calibration cannot see
        # (water temperature, for one), learnt from the anomaly-free recording by train.py.
        self.drift = np.ones(N_CHANNELS) if drift is None else np.asarray(drift, np.float64)
        if self.drift.shape != (N_CHANNELS,) or not np.all(self.drift >= 1.0):
            raise ValueError(f"drift must hold {N_CHANNELS} factors >= 1")
        self._buffer: np.ndarray | None = np.zeros((self.calibration_frames, N_CHANNELS), np.float32)
        self._seen = 0
        self._ema = 0.0
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
            self._ema += self.ema_alpha * (self.score(x[None, :])[0] - self._ema)
            self.state = "anomaly" if self._ema > self.threshold else "normal"
        if self.state != self._reported:
            self._reported = self.state
            return {"state": self.state}
        return None

    def score(self, rows: np.ndarray) -> np.ndarray:
        """Unsmoothed score per row ``(n, 8)``: T²/E[T²] + Q/E[Q] under the fitted covariance."""
        z = (rows - self.mean) / self.scale
        t = z @ self.axes
        t2 = np.sum(t * t / self.eigenvalues, axis=1)
        residual = z - t @ self.axes.T
        q = np.sum(residual * residual, axis=1)
        return t2 / self.t2_ref + q / self.q_ref

    def fit(self, rows: np.ndarray) -> None:
        """Fit scaling, PCA and threshold on calibration rows ``(n, 8)`` (n > 9)."""
        self.mean = rows.mean(axis=0)
        # A sensor that did not move during calibration (quantised, or stuck) must not
        # divide by ~0: floor its scale at a small fraction of its level.
        floor = 1e-3 * np.maximum(np.abs(self.mean), 1e-3)
        self.scale = np.maximum(rows.std(axis=0, ddof=1), floor)
        z = (rows - self.mean) / self.scale
        # Calibration covariance plus the slow wander each channel shows beyond it on a
        # longer normal recording (drift**2 - 1 in units of the calibration variance).
        cov = np.cov(z, rowvar=False) + np.diag(self.drift**2 - 1.0)
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
        raw = self.score(rows)
        # The threshold is the calibration rows' own smoothed maximum, with a margin; the
        # first 1/alpha rows are the smoother's warm-up and are left out.
        smoothed = np.empty_like(raw)
        ema = float(np.mean(raw))
        for i, value in enumerate(raw):
            ema += self.ema_alpha * (value - ema)
            smoothed[i] = ema
        warm = min(round(1.0 / self.ema_alpha), len(raw) // 2)
        self.calibration_peak = float(np.max(smoothed[warm:]))
        self.threshold = self.margin * self.calibration_peak
        self._ema = float(smoothed[-1])


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
                drift=np.asarray(model["drift"], dtype=np.float64),
            )
        except KeyError as missing:
            raise ValueError(f"{model_paths[0]}: model lacks {missing}") from None
