"""A sensor detector OR-ed with the per-channel ``lagz`` alarm (issue 13, item 6).

A bias on one channel is clear in that channel alone (dev split: AUC 0.93-1.00 per
channel) but lost when a detector scores all features together: the tampered channel's
deviation is one number among many, and the other channels' benign wander fills the
same range. So the alarm is kept apart: ``lagz_alarm`` (:mod:`.sensorfeatures`) is
already, per channel, the window against that channel's own largest benign value, and
it alarms above 1. :class:`ChannelAlarmFused` fits the base detector on every other
feature and fuses the two on one scale where 1 is each one's own threshold::

    fused = max((d - m_d) / (t_d - m_d), (a - m_a) / (1 - m_a))

``d``, ``t_d`` the detector's score and threshold, ``m_d`` the median of its calibration
scores; ``a`` the lagz alarm, ``m_a`` its median on the training windows. ``fused > 1``
exactly when the detector alarms OR some channel is beyond its benign tail, and the
continuous score ranks windows for ROC curves. On the device: one subtraction and one
division per side and a compare, after the detector.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinyward.detect.errors import DetectMisuse

#: The feature the fusion reads (last column of the vectors it is given).
ALARM_FEATURE = "lagz_alarm"


class ChannelAlarmFused:
    """``base`` on columns ``[:-1]``, OR-ed with the lagz alarm in the last column."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.name = f"{base.name}+lagz"
        self.threshold = math.inf
        self.base_median = 0.0
        self.alarm_median = 0.0
        self.calibration = None  # the OR has no single calibrated rate; eval says alarms/h

    def fit(self, X: np.ndarray, **kw: Any) -> ChannelAlarmFused:
        """Fit the base detector on every column but the last (keyword arguments go to
        its ``fit``); take the two medians.

        Raises:
            DetectMisuse: fewer than two columns.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] < 2:
            raise DetectMisuse("the fused sensor detector needs the features and lagz_alarm")
        self.base.fit(X[:, :-1], **kw)
        held = getattr(self.base, "calibration_scores", None)
        scores = np.asarray(held if held is not None and len(held) else
                            self.base.score(X[:, :-1]), dtype=np.float64)
        self.base_median = float(np.median(scores))
        self.alarm_median = float(np.median(X[:, -1]))
        self.threshold = 1.0
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        d = np.asarray(self.base.score(X[:, :-1]), dtype=np.float64)
        base_span = max(float(self.base.threshold) - self.base_median, 1e-12)
        alarm_span = max(1.0 - self.alarm_median, 1e-12)
        return np.asarray(np.maximum((d - self.base_median) / base_span,
                                     (X[:, -1] - self.alarm_median) / alarm_span))

    def model_bytes(self) -> int:
        """The base model and two float32 medians (lagz's tables are feature state)."""
        return int(self.base.model_bytes()) + 8

    def ops_per_inference(self) -> int:
        """The base model, then two subtractions, two divisions and a max."""
        return int(self.base.ops_per_inference()) + 5
