"""Alarm thresholds that keep their stated false-positive rate (FPR) on unseen benign data.

Every detector (tinyward's and the baselines) gets its threshold here, the same way:

1. **Contiguous, later calibration.** :func:`split_calibration` keeps the benign rows in
   order: the model is fitted on the earlier part and scored on the *last*
   ``fraction`` (default 25 %), as it will be after deployment. Random rows (the old
   method, kept as :func:`unsafe_random_split` for comparison) sit between autocorrelated
   neighbours that the model was fitted on, so their scores are optimistic.
2. **Peaks over threshold** (SPOT; Siffer et al., "Anomaly Detection in Streams with
   Extreme Value Theory", KDD 2017). Scores above an initial high quantile ``t`` (the
   ``1 - p0`` quantile, p0 = max(``tail_fraction``, 5 * target)) are the *peaks*; by the
   Pickands-Balkema-de Haan theorem their excesses follow a generalised Pareto
   distribution (GPD). :func:`fit_gpd` fits it by maximum likelihood (Grimshaw's
   reduction to one parameter, profile likelihood on a grid, then refined), and the
   threshold for rate q is ``t + GPD.isf(q * n / N_t)`` (n scores, N_t peaks).
3. **Stated confidence**: a moving-block bootstrap of the calibration scores (blocks of
   about sqrt(n) consecutive scores, so autocorrelation is kept) gives an interval on
   the threshold (default 90 %).
4. **Too little data is said, with the numbers.** A rate q needs at least
   ``max(min_peaks / p0, min_events / q)`` calibration scores: enough peaks to fit the
   tail, and a stretch long enough to expect ``min_events`` (10) exceedances at the rate
   itself (so the GPD extrapolates only modestly). Why 10: on synthetic tails with a
   known quantile (exponential, GPD, lognormal, half-normal), a point-estimate threshold
   from a stretch expecting 2 exceedances realised more than 2x off the rate on fresh
   data in 0-7 of 20 draws per case (lognormal at 0.1 %: 7 of 20, 0.35x-3.0x); at 10,
   in at most 1 of 20 (worst 2.46x; tests/detect/test_threshold.py,
   ``test_supported_rate_is_kept_within_2x_on_fresh_data``). Below that, :func:`calibrate` raises
   :class:`~tinyward.detect.errors.CalibrationRefused` (``on_insufficient="refuse"``,
   the default of this module) or returns the best threshold it can with a loud warning
   (``"warn"``: the text is in :attr:`Calibration.warnings`, is emitted as a
   :class:`ThresholdWarning`, printed by the CLI and recorded in the model file).
   Detectors' ``fit`` warns by default: a model with a weak threshold is still useful at
   a higher rate, the warning names the lowest rate the data supports, and every eval
   shows the realised rate; ``tinyward detect train --strict-threshold`` refuses.
5. **Realised rate with an exact interval**: :func:`realised_fpr` counts false alarms on
   held-out benign data (not used to fit or calibrate) and gives a Clopper-Pearson
   interval and whether the rate is within 2x of the requested one.

Pure functions on numpy arrays; scipy is imported only for the beta and binomial
distributions (the interval and the misfit check).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from tinyward.detect.errors import CalibrationRefused, DetectMisuse

__all__ = [
    "GPD",
    "Calibration",
    "Policy",
    "RealisedRate",
    "ThresholdWarning",
    "calibrate",
    "calibrate_mixture",
    "clopper_pearson",
    "empirical_threshold",
    "fit_gpd",
    "realised_fpr",
    "required_scores",
    "split_calibration",
    "supported_fpr",
    "unsafe_random_split",
]

#: The GPD shape is kept at or above this: below -1 the likelihood is unbounded, and
#: between -1 and -0.5 the MLE is irregular (Smith 1985). Score tails are rarely bounded.
MIN_SHAPE = -1.0
#: The initial threshold is never below the 75th percentile: the GPD describes a tail.
_MAX_P0 = 0.25


class ThresholdWarning(UserWarning):
    """The calibration data cannot support the requested rate (emitted by ``calibrate``)."""


@dataclass(frozen=True)
class Policy:
    """How thresholds are calibrated (the defaults are the project's; see the module doc).

    ``fraction``: the later share of the benign rows kept for calibration.
    ``tail_fraction``: p0's floor (SPOT's 0.98 quantile as initial threshold).
    ``min_peaks``: fewest peaks the GPD is fitted on. ``min_events``: expected
    exceedances at the requested rate in the calibration stretch (10: fewer leave the
    realised rate more than 2x off on fresh data too often; see the module doc).
    ``confidence``: of the bootstrap interval (``bootstrap`` resamples, fixed ``seed``).
    """

    fraction: float = 0.25
    tail_fraction: float = 0.02
    min_peaks: int = 30
    min_events: float = 10.0
    confidence: float = 0.9
    bootstrap: int = 200
    seed: int = 0
    on_insufficient: Literal["refuse", "warn"] = "refuse"

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise DetectMisuse(f"calibration fraction must be in (0, 1), got {self.fraction}")
        if not 0.0 < self.tail_fraction < 0.5:
            raise DetectMisuse(f"tail_fraction must be in (0, 0.5), got {self.tail_fraction}")
        if self.min_peaks < 5 or self.min_events <= 0 or not 0 < self.confidence < 1:
            raise DetectMisuse("min_peaks >= 5, min_events > 0 and confidence in (0, 1)")
        if self.bootstrap < 0:
            raise DetectMisuse("bootstrap must be >= 0")
        if self.on_insufficient not in ("refuse", "warn"):
            raise DetectMisuse("on_insufficient must be 'refuse' or 'warn'")

    def p0(self, target_fpr: float) -> float:
        """Share of calibration scores above the initial threshold."""
        return min(_MAX_P0, max(self.tail_fraction, 5.0 * target_fpr))


# ----------------------------------------------------------------------------- splits
def split_calibration(X: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split benign rows *in order*: (earlier part to fit on, later part to calibrate on).

    Raises:
        DetectMisuse: the fraction is outside (0, 1) or either part would have < 10 rows.
    """
    if not 0.0 < fraction < 1.0:
        raise DetectMisuse(f"the calibration fraction must be in (0, 1), got {fraction}")
    n = len(X)
    n_cal = round(n * fraction)
    if n_cal < 10 or n - n_cal < 10:
        raise DetectMisuse(f"{n} benign vectors are too few to fit and calibrate on {fraction}")
    return X[: n - n_cal], X[n - n_cal :]


def unsafe_random_split(
    X: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The method before issue 13: random rows (fixed seed) held out. UNSAFE: on an
    autocorrelated stream the held-out rows have fitted neighbours; kept for comparison.

    Raises:
        DetectMisuse: as :func:`split_calibration`.
    """
    if not 0.0 < fraction < 1.0:
        raise DetectMisuse(f"holdout_fraction must be in (0, 1), got {fraction}")
    n = len(X)
    n_hold = round(n * fraction)
    if n_hold < 10 or n - n_hold < 10:
        raise DetectMisuse(f"{n} benign vectors are too few to fit and hold out {fraction}")
    order = np.random.default_rng(seed).permutation(n)
    return X[order[n_hold:]], X[order[:n_hold]]


def empirical_threshold(scores: np.ndarray, target_fpr: float) -> float:
    """The smallest score that at most ``target_fpr`` of ``scores`` exceed (the method
    before issue 13 used it on ~940 rows: with fewer than 1/target it is the maximum)."""
    _check_rate(target_fpr)
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - target_fpr,
                             method="higher"))


# ----------------------------------------------------------------------------- GPD
@dataclass(frozen=True)
class GPD:
    """Generalised Pareto distribution of excesses y >= 0: P(Y > y) = (1 + shape*y/scale)
    ** (-1/shape) (exponential, exp(-y/scale), when shape == 0)."""

    shape: float
    scale: float

    def sf(self, y: np.ndarray | float) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if abs(self.shape) < 1e-9:
            return np.asarray(np.exp(-y / self.scale))
        base = np.maximum(1.0 + self.shape * y / self.scale, 0.0)
        with np.errstate(divide="ignore"):
            return np.asarray(np.where(base > 0, base ** (-1.0 / self.shape), 0.0))

    def isf(self, p: float) -> float:
        """The excess y with P(Y > y) = p."""
        if abs(self.shape) < 1e-9:
            return -self.scale * math.log(p)
        return float(self.scale / self.shape * (p ** (-self.shape) - 1.0))


def _profile(theta: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grimshaw's reduction: for theta = shape/scale the MLE shape is mean(log1p(theta*y));
    returns (profile log-likelihood / n, shape) for each theta (rows), with -inf where
    the shape falls below MIN_SHAPE."""
    logs = np.log1p(np.outer(theta, y))
    shape = logs.mean(axis=1)
    small = np.abs(theta) < 1e-12
    ratio = np.where(small, y.mean(), shape / np.where(small, 1.0, theta))  # = scale
    with np.errstate(divide="ignore", invalid="ignore"):
        loglik = -np.log(ratio) - 1.0 - shape
    loglik = np.where((shape >= MIN_SHAPE) & (ratio > 0) & np.isfinite(loglik), loglik, -np.inf)
    return loglik, shape


def _theta_grid(y: np.ndarray, points: int) -> np.ndarray:
    mean, top = float(y.mean()), float(y.max())
    negative = -np.linspace(0.0, 1.0, points // 3, endpoint=False)[1:] / top
    positive = np.geomspace(1e-6, 1e6, points - points // 3) / mean
    return np.concatenate([negative[::-1], [0.0], positive])


def fit_gpd(excesses: np.ndarray, *, refine: bool = True) -> GPD:
    """Maximum-likelihood GPD fit to positive ``excesses`` (shape >= :data:`MIN_SHAPE`).

    Raises:
        DetectMisuse: fewer than 3 excesses, or any not finite and positive.
    """
    y = np.asarray(excesses, dtype=np.float64)
    if y.ndim != 1 or len(y) < 3 or not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise DetectMisuse("fit_gpd needs at least 3 finite, positive excesses")
    grid = _theta_grid(y, 240)
    loglik, _ = _profile(grid, y)
    best = int(np.argmax(loglik))
    theta = float(grid[best])
    if refine:
        lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
        for _ in range(2):  # two rounds of a finer local grid: cheap and monotone
            local = np.linspace(lo, hi, 41)
            ll, _ = _profile(local, y)
            k = int(np.argmax(ll))
            if ll[k] >= loglik[best]:
                theta = float(local[k])
            lo, hi = local[max(k - 1, 0)], local[min(k + 1, 40)]
    shape = float(np.log1p(theta * y).mean())
    scale = float(y.mean()) if abs(theta) < 1e-12 else shape / theta
    if abs(theta) < 1e-12 or scale <= 0:
        return GPD(0.0, float(y.mean()))
    return GPD(shape, scale)


def _pot(scores: np.ndarray, target_fpr: float, p0: float, refine: bool) -> tuple[
        float, float, int, GPD | None]:
    """(threshold, initial threshold t, number of peaks, GPD) by peaks over threshold.
    GPD is None when the threshold is empirical (ties leave too few peaks above t)."""
    n = len(scores)
    t = float(np.quantile(scores, 1.0 - p0, method="lower"))
    peaks = scores[scores > t] - t
    n_t = len(peaks)
    if n_t == 0 or n_t / n <= target_fpr:
        return empirical_threshold(scores, target_fpr), t, n_t, None
    if n_t < 3 or np.all(peaks == peaks[0]):
        return float(scores.max()), t, n_t, None
    gpd = fit_gpd(peaks, refine=refine)
    return t + gpd.isf(target_fpr * n / n_t), t, n_t, gpd


def _block_bootstrap(scores: np.ndarray, target_fpr: float, p0: float,
                     policy: Policy) -> tuple[float, float] | None:
    n = len(scores)
    if policy.bootstrap == 0 or n < 20:
        return None
    rng = np.random.default_rng(policy.seed)
    block = max(1, round(math.sqrt(n)))
    starts_max = n - block + 1
    n_blocks = math.ceil(n / block)
    values = []
    for _ in range(policy.bootstrap):
        starts = rng.integers(0, starts_max, n_blocks)
        sample = (starts[:, None] + np.arange(block)).ravel()[:n]
        z, *_ = _pot(scores[sample], target_fpr, p0, refine=False)
        values.append(z)
    alpha = (1.0 - policy.confidence) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------- calibrate
def required_scores(target_fpr: float, policy: Policy = Policy()) -> int:
    """Calibration scores needed for ``target_fpr``: ``max(min_peaks / p0, min_events / q)``."""
    _check_rate(target_fpr)
    return math.ceil(max(policy.min_peaks / policy.p0(target_fpr),
                         policy.min_events / target_fpr) - 1e-9)


def supported_fpr(n: int, policy: Policy = Policy()) -> float:
    """The lowest rate that ``n`` calibration scores support (inverse of
    :func:`required_scores`; 1.0 if none does)."""
    if n <= 0 or policy.min_peaks / n > _MAX_P0:
        return 1.0
    q = policy.min_events / n
    if policy.min_peaks / n > policy.tail_fraction:
        q = max(q, policy.min_peaks / (5.0 * n))
    return min(1.0, q)


@dataclass(frozen=True)
class Calibration:
    """A calibrated threshold and how it was obtained (stored in the model file).

    ``method``: ``"pot"`` (GPD tail), ``"empirical"`` (the requested rate is within the
    data: a plain quantile), ``"max"`` (too few peaks: the largest calibration score) or
    ``"unsafe-legacy"`` (the method before issue 13, for comparison only).
    ``interval`` is the bootstrap interval of the threshold at ``confidence``.
    """

    threshold: float
    target_fpr: float
    method: str
    n_fit: int
    n_calibration: int
    needed: int
    initial_threshold: float | None = None
    n_peaks: int = 0
    shape: float | None = None
    scale: float | None = None
    interval: tuple[float, float] | None = None
    confidence: float | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    #: Mean of the calibration scores at or below the threshold, and the on-device drift
    #: rate (:mod:`tinyward.detect.threshold_stream`; 0 = a fixed threshold).
    normal_level: float | None = None
    drift_alpha: float = 0.0
    #: Of ``n_calibration``, the rows of the stretch re-scored as new peers
    #: (:mod:`tinyward.detect.newpeers`; 0 = the later stretch alone).
    n_new_peer_rows: int = 0
    #: The weights of the parts the threshold was solved for (:func:`calibrate_mixture`:
    #: known peers, new peers); empty for one part.
    mixture_weights: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if v is not None}
        out["warnings"] = list(self.warnings)
        out["mixture_weights"] = list(self.mixture_weights)
        if self.interval is not None:
            out["interval"] = list(self.interval)
        return out

    @classmethod
    def from_json(cls, data: Any) -> Calibration:
        """Rebuild from a model file (hostile input). Raises DetectMisuse with the reason."""
        if not isinstance(data, dict):
            raise DetectMisuse("'calibration' is not an object")

        def num(key: str, optional: bool = False) -> float | None:
            value = data.get(key)
            if value is None and optional:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value)):
                raise DetectMisuse(f"'calibration.{key}' is not a finite number")
            return float(value)

        def count(key: str) -> int:
            value = data.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
                raise DetectMisuse(f"'calibration.{key}' is not a count")
            return value

        method = data.get("method")
        if method not in ("pot", "empirical", "max", "unsafe-legacy"):
            raise DetectMisuse("'calibration.method' is not pot, empirical, max or unsafe-legacy")
        target = num("target_fpr") or 0.0
        if not 0 < target < 1:
            raise DetectMisuse("'calibration.target_fpr' must be in (0, 1)")
        raw_warnings = data.get("warnings", [])
        if not (isinstance(raw_warnings, list) and len(raw_warnings) <= 16
                and all(isinstance(w, str) and len(w) <= 2000 for w in raw_warnings)):
            raise DetectMisuse("'calibration.warnings' is not a short list of strings")
        interval = data.get("interval")
        if interval is not None:
            if not (isinstance(interval, list) and len(interval) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool)
                    and math.isfinite(v) for v in interval)):
                raise DetectMisuse("'calibration.interval' is not two finite numbers")
            interval = (float(interval[0]), float(interval[1]))
        threshold = num("threshold") or 0.0
        weights = data.get("mixture_weights", [])
        if not (isinstance(weights, list) and len(weights) <= 8 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v) and 0 < v <= 1 for v in weights)):
            raise DetectMisuse("'calibration.mixture_weights' is not a short list of weights")
        drift = num("drift_alpha", True) or 0.0
        if not 0.0 <= drift < 1.0:
            raise DetectMisuse("'calibration.drift_alpha' must be in [0, 1)")
        return cls(threshold=threshold, target_fpr=target, method=method,
                   n_fit=count("n_fit"), n_calibration=count("n_calibration"),
                   needed=count("needed"), initial_threshold=num("initial_threshold", True),
                   n_peaks=count("n_peaks"), shape=num("shape", True),
                   scale=num("scale", True), interval=interval,
                   confidence=num("confidence", True), warnings=tuple(raw_warnings),
                   normal_level=num("normal_level", True), drift_alpha=drift,
                   n_new_peer_rows=count("n_new_peer_rows"),
                   mixture_weights=tuple(float(v) for v in weights))


def calibrate(
    scores: np.ndarray,
    target_fpr: float,
    *,
    n_fit: int = 0,
    policy: Policy = Policy(),
    integer: bool = False,
    what: str = "",
) -> Calibration:
    """The threshold (alarm: ``score > threshold``) for ``target_fpr`` from the benign
    ``scores`` of the calibration stretch, in stream order (see the module doc).

    ``integer``: scores are integers (int8 detectors); the threshold is rounded down,
    which keeps ``score > threshold`` unchanged. ``what`` names the detector in messages.

    Raises:
        CalibrationRefused: too few scores for the rate and ``policy.on_insufficient``
            is ``"refuse"`` (the message gives both numbers and the supported rate).
        DetectMisuse: the rate is outside (0, 1) or scores are empty or not finite.
    """
    _check_rate(target_fpr)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(s) == 0 or not np.all(np.isfinite(s)):
        raise DetectMisuse("calibration scores must be a non-empty array of finite numbers")
    n = len(s)
    needed = required_scores(target_fpr, policy)
    notes: list[str] = []
    if n < needed:
        lowest = supported_fpr(n, policy)
        message = (
            f"{_pct(target_fpr)} FPR needs at least {needed} calibration scores, you have {n}"
            f"{' (' + what + ')' if what else ''}; "
            + (f"these support FPR >= {_pct(lowest)}. " if lowest < 1.0 else
               f"these support no rate (any needs {math.ceil(policy.min_peaks / _MAX_P0)}). ")
            + "Give more benign data (calibration uses its later "
            f"{_pct(policy.fraction)}) or ask for a higher rate"
        )
        if policy.on_insufficient == "refuse":
            raise CalibrationRefused(message, target_fpr=target_fpr, needed=needed, have=n,
                                     supported_fpr=lowest)
        notes.append("threshold may not keep its rate: " + message)
    p0 = policy.p0(target_fpr)
    z, t, n_t, gpd = _pot(s, target_fpr, p0, refine=True)
    if gpd is not None and n_t < policy.min_peaks:
        # Too few peaks to trust a fitted tail (only reached in "warn" mode): the largest
        # calibration score, which at least no calibration score exceeds.
        z, gpd = float(s.max()), None
    method = "pot"
    if gpd is None:
        method = "empirical" if n_t and n_t / n <= target_fpr and z < s.max() else "max"
    if method == "pot":
        misfit = _contradicts(s, z, target_fpr)
        if misfit:
            notes.append(misfit)
            z, method, gpd = empirical_threshold(s, target_fpr), "empirical", None
    if method == "max":
        why = (f"only {n_t} peaks above the initial threshold {t:.6g} (a GPD needs "
               f"{policy.min_peaks}): the threshold is the largest calibration score")
        if notes:
            notes[0] += f"; {why}"
        else:
            notes.append(why)
    interval = _block_bootstrap(s, target_fpr, p0, policy) if method == "pot" else None
    if integer:
        z = math.floor(z)
        interval = None if interval is None else (math.floor(interval[0]),
                                                  math.floor(interval[1]))
    for note in notes:
        warnings.warn(note, ThresholdWarning, stacklevel=2)
    normal = s[s <= z]
    return Calibration(
        threshold=float(z), target_fpr=target_fpr, method=method, n_fit=n_fit,
        n_calibration=n, needed=needed, initial_threshold=t, n_peaks=n_t,
        shape=None if gpd is None else gpd.shape, scale=None if gpd is None else gpd.scale,
        interval=interval, confidence=policy.confidence if interval else None,
        warnings=tuple(notes), normal_level=float(normal.mean()) if len(normal) else None,
    )


# ----------------------------------------------------------------------------- mixture
def _tail(scores: np.ndarray, target_fpr: float, p0: float, refine: bool,
          min_peaks: int) -> tuple[np.ndarray, float, int, GPD | None]:
    """(sorted scores, initial threshold, peaks, GPD or None) of one part of a mixture:
    the same peaks-over-threshold fit as :func:`calibrate` (no GPD with too few peaks)."""
    s = np.sort(scores)
    t = float(np.quantile(s, 1.0 - p0, method="lower"))
    peaks = s[s > t] - t
    gpd = None
    if len(peaks) >= max(3, min_peaks) and not np.all(peaks == peaks[0]):
        gpd = fit_gpd(peaks, refine=refine)
        if _contradicts(s, t + gpd.isf(target_fpr * len(s) / len(peaks)), target_fpr):
            gpd = None  # as calibrate: a misfit tail falls back to the data
    return s, t, len(peaks), gpd


def _survival(part: tuple[np.ndarray, float, int, GPD | None], z: float) -> float:
    """P(score > z) of one part: the GPD tail above its initial threshold, else the data."""
    s, t, n_t, gpd = part
    if gpd is not None and z > t:
        return float(n_t / len(s) * gpd.sf(z - t))
    return float(len(s) - np.searchsorted(s, z, side="right")) / len(s)


def _solve_mixture(parts: list[tuple[np.ndarray, float, int, GPD | None]],
                   weights: list[float], target_fpr: float) -> float:
    """The smallest z (to 1e-9 of the span) with sum(w * P_part(score > z)) <= target."""
    lo = min(float(p[0][0]) for p in parts)
    hi = max(float(p[0][-1]) for p in parts)
    # A GPD tail may reach past the largest score: widen until the rate is met.
    span = max(hi - lo, 1e-12)
    for _ in range(200):
        if sum(w * _survival(p, hi) for p, w in zip(parts, weights, strict=True)) <= target_fpr:
            break
        hi += span
        span *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if sum(w * _survival(p, mid) for p, w in zip(parts, weights, strict=True)) <= target_fpr:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-9 * max(abs(hi), 1.0):
            break
    return hi


def calibrate_mixture(
    parts: list[np.ndarray],
    weights: list[float],
    target_fpr: float,
    *,
    n_fit: int = 0,
    policy: Policy = Policy(),
    integer: bool = False,
    what: str = "",
) -> Calibration:
    """The threshold at which a stream that is ``weights[i]`` part ``i`` (each part's
    benign calibration scores, in stream order) alarms at ``target_fpr`` in all:
    ``sum_i w_i * P_i(score > z) = target_fpr``, each ``P_i`` estimated as
    :func:`calibrate` does (peaks over threshold above its ``1 - p0`` quantile, the
    data below). Used for known and new peers (:mod:`tinyward.detect.newpeers`).

    Each part must support the rate (:func:`required_scores`), as for :func:`calibrate`;
    a part that does not is refused or warned about (``policy.on_insufficient``). The
    threshold is the point estimate; ``interval`` is a moving-block bootstrap of every
    part (``policy.confidence``).

    Raises:
        CalibrationRefused: a part too short for the rate and ``on_insufficient="refuse"``.
        DetectMisuse: bad rate, weights that are not positive and summing to 1, or
            empty or non-finite scores.
    """
    _check_rate(target_fpr)
    if len(parts) != len(weights) or not parts or any(w <= 0 for w in weights) or (
            abs(sum(weights) - 1.0) > 1e-9):
        raise DetectMisuse("mixture weights must be positive, one per part, summing to 1")
    arrays = [np.asarray(p, dtype=np.float64).ravel() for p in parts]
    if any(len(a) == 0 or not np.all(np.isfinite(a)) for a in arrays):
        raise DetectMisuse("calibration scores must be non-empty arrays of finite numbers")
    # Each part alone must support the rate: the shortage is said (or refused) per part.
    notes: list[str] = []
    for i, a in enumerate(arrays):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            alone = calibrate(a, target_fpr, n_fit=n_fit, policy=replace(policy, bootstrap=0),
                              what=f"{what} part {i + 1}" if what else f"part {i + 1}")
        del caught
        notes.extend(w for w in alone.warnings if w not in notes)
    p0 = policy.p0(target_fpr)
    fitted = [_tail(a, target_fpr, p0, True, policy.min_peaks) for a in arrays]
    z = _solve_mixture(fitted, list(weights), target_fpr)
    interval = None
    if policy.bootstrap and all(len(a) >= 20 for a in arrays):
        rng = np.random.default_rng(policy.seed)
        values = []
        for _ in range(policy.bootstrap):
            sample = []
            for a in arrays:
                block = max(1, round(math.sqrt(len(a))))
                starts = rng.integers(0, len(a) - block + 1, math.ceil(len(a) / block))
                sample.append(a[(starts[:, None] + np.arange(block)).ravel()[: len(a)]])
            tails = [_tail(b, target_fpr, p0, False, policy.min_peaks) for b in sample]
            values.append(_solve_mixture(tails, list(weights), target_fpr))
        alpha = (1.0 - policy.confidence) / 2
        lo, hi = np.quantile(values, [alpha, 1 - alpha])
        interval = (float(lo), float(hi))
    if integer:
        z = math.floor(z)
        interval = None if interval is None else (math.floor(interval[0]),
                                                  math.floor(interval[1]))
    for note in notes:
        warnings.warn(note, ThresholdWarning, stacklevel=2)
    everything = np.concatenate(arrays)
    normal = everything[everything <= z]
    pot = all(f[3] is not None for f in fitted)
    return Calibration(
        threshold=float(z), target_fpr=target_fpr, method="pot" if pot else "empirical",
        n_fit=n_fit, n_calibration=len(everything),
        needed=max(required_scores(target_fpr, policy), 1),
        initial_threshold=fitted[0][1], n_peaks=sum(f[2] for f in fitted),
        interval=interval, confidence=policy.confidence if interval else None,
        warnings=tuple(notes), normal_level=float(normal.mean()) if len(normal) else None,
        mixture_weights=tuple(float(w) for w in weights),
    )


#: A GPD threshold is refused when the calibration data make its count of exceedances
#: this improbable (binomial, either side): e.g. bounded scores with an atom at the top.
_MISFIT_P = 1e-3


def _contradicts(scores: np.ndarray, z: float, target_fpr: float) -> str:
    """Why the GPD threshold ``z`` contradicts the calibration scores, or ""."""
    n = len(scores)
    k = int(np.sum(scores > z))
    from scipy.stats import binom

    low, high = float(binom.cdf(k, n, target_fpr)), float(binom.sf(k - 1, n, target_fpr))
    if min(low, high) >= _MISFIT_P:
        return ""
    return (f"the GPD tail does not fit the calibration scores ({k} of {n} exceed its "
            f"threshold {z:.6g}, {target_fpr * n:.3g} expected): the empirical quantile is used")


def legacy_calibration(scores: np.ndarray, target_fpr: float, *, n_fit: int = 0,
                       integer: bool = False) -> Calibration:
    """The method before issue 13 (UNSAFE; comparisons only): the empirical quantile."""
    z = empirical_threshold(scores, target_fpr)
    return Calibration(threshold=float(math.floor(z) if integer else z),
                       target_fpr=target_fpr, method="unsafe-legacy", n_fit=n_fit,
                       n_calibration=len(scores), needed=0,
                       warnings=("unsafe-legacy threshold: random held-out rows, plain "
                                 "quantile; kept only for comparison",))


# ----------------------------------------------------------------------------- realised
def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for a binomial rate k/n."""
    if n <= 0 or not 0 <= k <= n:
        raise DetectMisuse(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    from scipy.stats import beta

    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True)
class RealisedRate:
    """False alarms on held-out benign data: ``alarms`` of ``n``, the rate, its exact
    interval, the requested rate and whether the rate is within 2x of it (both ways)."""

    requested: float
    threshold: float
    alarms: int
    n: int
    rate: float
    low: float
    high: float
    confidence: float
    within_2x: bool

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    def text(self) -> str:
        """e.g. ``0.10 % requested: 0.13 % realised (95 % CI 0.09-0.18 %, 29/22668), within 2x``."""
        verdict = "within 2x" if self.within_2x else "NOT within 2x"
        return (f"{_pct(self.requested)} requested: {_pct(self.rate)} realised "
                f"({round(100 * self.confidence)} % CI {_pct(self.low, False)}-"
                f"{_pct(self.high)}, {self.alarms}/{self.n}), {verdict}")


def realised_fpr(benign_scores: np.ndarray, threshold: float, requested: float,
                 confidence: float = 0.95) -> RealisedRate:
    """Realised FPR of ``threshold`` on held-out benign scores (never used to fit or
    calibrate). The interval assumes independent rows; false alarms on a stream cluster,
    so read it as a lower bound on the uncertainty.

    Raises:
        DetectMisuse: no scores.
    """
    s = np.asarray(benign_scores, dtype=np.float64)
    n = len(s)
    k = int(np.sum(s > threshold))
    lo, hi = clopper_pearson(k, n, confidence)
    rate = k / n
    return RealisedRate(requested, float(threshold), k, n, rate, lo, hi, confidence,
                        requested / 2 <= rate <= 2 * requested)


# ----------------------------------------------------------------------------- helpers
def _check_rate(target_fpr: float) -> None:
    if not 0.0 < target_fpr < 1.0:
        raise DetectMisuse(f"target_fpr must be in (0, 1), got {target_fpr}")


def _pct(rate: float, unit: bool = True) -> str:
    text = f"{100 * rate:.3g}"
    return f"{text} %" if unit else text


def with_warnings(calibration: Calibration, *extra: str) -> Calibration:
    """``calibration`` with more warning texts (e.g. from the int8 rounding)."""
    return replace(calibration, warnings=(*calibration.warnings, *extra))
