"""People counter: the sandboxed application (numpy only).

Input: frames of 20 readings x 2 zones (int16 mm, 0 = invalid) from a ceiling-facing
two-zone time-of-flight sensor on the lintel (see ``simulate.py``). Output: ``count``, the
number of people inside, emitted when it changes (and once at start).

Pipeline, sample by sample:

1. Background: the floor distance per zone, learnt from the first second (the doorway
   must be empty at power-on) and tracked slowly while nobody is there.
2. Cleaning: an invalid reading repeats the last valid one; a median of three removes
   single spurious ranges. Height above the floor = floor - distance.
3. Occupancy per zone with hysteresis (on above 600 mm, off below 450 mm).
4. An *event* runs from the first occupied sample to 0.3 s after both zones are empty
   (at most 60 s: a bounded buffer of 1,200 x 2 heights).
5. Per event, 17 hand-made features (order and timing of the zones, how long and how often
   each is occupied, heights, cross-correlation lag, forward/backward zone sequences).
6. A multinomial logistic regression over the net change of the event, one of
   {-2, -1, 0, +1, +2}; the count moves by the most likely one, clipped to 0..999.

Model: feature mean and scale (2 x 17) and weights (5 x 17 + 5) = 124 float32 numbers,
496 bytes; the event buffer is 4.8 KB of int16.
"""

from __future__ import annotations

import pathlib

import numpy as np

RATE_HZ = 20
CLASSES = np.array([-2, -1, 0, 1, 2])
N_FEATURES = 17
ON_MM = 600.0
OFF_MM = 450.0
END_SAMPLES = 6  # both zones empty this long closes an event
MAX_EVENT = 60 * RATE_HZ
CALIBRATION = RATE_HZ
MAX_COUNT = 999


def _segments(occupied: np.ndarray) -> int:
    """Number of runs of True."""
    return int(np.sum(np.diff(occupied.astype(np.int8), prepend=0) == 1))


def _sequences(oa: np.ndarray, ob: np.ndarray) -> tuple[int, int]:
    """Complete out->in and in->out passes through the zone states (ST's counting rule)."""
    state = oa.astype(np.int8) + 2 * ob.astype(np.int8)  # 0 none, 1 out, 2 in, 3 both
    collapsed = state[np.concatenate(([True], state[1:] != state[:-1]))]
    forward = backward = 0
    path: list[int] = []
    for s in collapsed:
        if s == 0:
            if path[:1] == [1] and path[-1:] == [2] and 3 in path:
                forward += 1
            elif path[:1] == [2] and path[-1:] == [1] and 3 in path:
                backward += 1
            path = []
        elif not path or path[-1] != s:
            path.append(int(s))
    if path[:1] == [1] and path[-1:] == [2]:
        forward += 1
    elif path[:1] == [2] and path[-1:] == [1]:
        backward += 1
    return forward, backward


def features(heights: np.ndarray) -> np.ndarray:
    """The 17 features of one event; ``heights`` is ``(n, 2)`` mm above the floor, n >= 1."""
    h = np.asarray(heights, dtype=np.float64)
    n = len(h)
    occ = np.zeros_like(h, dtype=bool)
    for z in range(2):  # hysteresis again, on the event's own samples
        on = False
        for i in range(n):
            on = h[i, z] > (OFF_MM if on else ON_MM)
            occ[i, z] = on
    oa, ob = occ[:, 0], occ[:, 1]
    idx = np.arange(n)

    def first(o: np.ndarray) -> float:
        return float(idx[o][0]) if o.any() else float(n)

    def last(o: np.ndarray) -> float:
        return float(idx[o][-1]) if o.any() else -1.0

    def centroid(z: int) -> float:
        w = np.where(occ[:, z], h[:, z], 0.0)
        return float(np.sum(idx * w) / np.sum(w)) if np.sum(w) > 0 else n / 2.0

    cap = 3.0 * RATE_HZ
    lag = 0
    a = h[:, 0] - h[:, 0].mean()
    b = h[:, 1] - h[:, 1].mean()
    if n > 2 and np.any(a) and np.any(b):
        lags = range(-min(20, n - 1), min(20, n - 1) + 1)
        corr = [np.dot(a[max(0, -k) : n - max(0, k)], b[max(0, k) : n - max(0, -k)]) for k in lags]
        lag = list(lags)[int(np.argmax(corr))]
    forward, backward = _sequences(oa, ob)
    return np.array(
        [
            np.clip(first(ob) - first(oa), -cap, cap) / RATE_HZ,
            np.clip(last(ob) - last(oa), -cap, cap) / RATE_HZ,
            np.clip(centroid(1) - centroid(0), -cap, cap) / RATE_HZ,
            np.log(n / RATE_HZ),
            oa.mean(),
            ob.mean(),
            (oa & ob).mean(),
            min(_segments(oa), 4),
            min(_segments(ob), 4),
            h[:, 0].max() / 1000.0,
            h[:, 1].max() / 1000.0,
            np.sum(np.clip(h[:, 0], 0, None)) / 1000.0 / RATE_HZ,
            np.sum(np.clip(h[:, 1], 0, None)) / 1000.0 / RATE_HZ,
            lag / RATE_HZ,
            min(forward, 3),
            min(backward, 3),
            min(forward, 3) - min(backward, 3),
        ]
    )


class Segmenter:
    """Sample-by-sample background, cleaning and event cutting; yields event features."""

    def __init__(self) -> None:
        self.floor = np.zeros(2)
        self._calibration: list[np.ndarray] = []
        self._last_valid = np.zeros(2)
        self._recent = np.zeros((3, 2))
        self._on = np.zeros(2, dtype=bool)
        self._event = np.zeros((MAX_EVENT, 2), dtype=np.int16)
        self._length = 0
        self._quiet = 0
        self.samples = 0
        self.last_span: tuple[int, int] = (0, 0)  # sample indices of the last closed event

    def push(self, reading: np.ndarray) -> np.ndarray | None:
        """One ``(2,)`` reading in mm; the features of an event that just closed, else None."""
        self.samples += 1
        r = np.asarray(reading, dtype=np.float64)
        valid = r > 0
        self._last_valid = np.where(valid, r, self._last_valid)
        if len(self._calibration) < CALIBRATION:
            self._calibration.append(r.copy())
            if len(self._calibration) == CALIBRATION:
                cal = np.asarray(self._calibration)
                self.floor = np.array([np.median(c[c > 0]) if np.any(c > 0) else 2000.0 for c in cal.T])
                self._last_valid = np.where(self._last_valid > 0, self._last_valid, self.floor)
                self._recent[:] = 0.0
            return None
        self._recent = np.roll(self._recent, -1, axis=0)
        self._recent[-1] = self.floor - self._last_valid
        height = np.median(self._recent, axis=0)
        self._on = height > np.where(self._on, OFF_MM, ON_MM)
        if self._length == 0 and not self._on.any():
            # Empty doorway: follow slow changes of the floor (a mat, a moved sensor).
            near = valid & (np.abs(r - self.floor) < 150)
            self.floor = np.where(near, self.floor + 0.01 * (r - self.floor), self.floor)
            return None
        self._event[self._length] = np.clip(height, -32000, 32000).astype(np.int16)
        self._length += 1
        self._quiet = 0 if self._on.any() else self._quiet + 1
        if self._quiet >= END_SAMPLES or self._length == MAX_EVENT:
            n = self._length - self._quiet
            self.last_span = (self.samples - self._length, self.samples - self._quiet)
            self._length = self._quiet = 0
            return features(self._event[: max(n, 1)])
        return None


class PeopleCounter:
    """Counts people inside from two-zone ToF frames with a tiny softmax classifier."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float64).reshape(N_FEATURES)
        self.scale = np.asarray(scale, dtype=np.float64).reshape(N_FEATURES)
        self.weights = np.asarray(weights, dtype=np.float64).reshape(len(CLASSES), N_FEATURES)
        self.bias = np.asarray(bias, dtype=np.float64).reshape(len(CLASSES))
        if not np.all(self.scale > 0):
            raise ValueError("feature scales must be positive")
        self.segmenter = Segmenter()
        self.count = 0
        self._reported: int | None = None

    def classify(self, feats: np.ndarray) -> int:
        """The most likely net change of people inside for one event's features."""
        logits = self.weights @ ((feats - self.mean) / self.scale) + self.bias
        return int(CLASSES[int(np.argmax(logits))])

    def process(self, frame: np.ndarray) -> dict[str, int] | None:
        """Take a ``(k, 2)`` frame of readings; return ``{"count": n}`` when n changes.

        Raises:
            ValueError: the frame does not have two columns.
        """
        readings = np.asarray(frame)
        if readings.ndim != 2 or readings.shape[1] != 2:
            raise ValueError(f"expected frames of shape (k, 2), got {readings.shape}")
        for reading in readings:
            feats = self.segmenter.push(reading)
            if feats is not None:
                self.count = int(np.clip(self.count + self.classify(feats), 0, MAX_COUNT))
        if self.count != self._reported:
            self._reported = self.count
            return {"count": self.count}
        return None


def factory(model_paths: list[pathlib.Path]) -> PeopleCounter:
    """Entry point: load the classifier from ``model.npz``.

    Raises:
        ValueError: a weight is missing or has the wrong shape.
        OSError: the model file cannot be read.
    """
    with np.load(model_paths[0], allow_pickle=False) as model:
        try:
            return PeopleCounter(model["mean"], model["scale"], model["weights"], model["bias"])
        except KeyError as missing:
            raise ValueError(f"{model_paths[0]}: model lacks {missing}") from None
