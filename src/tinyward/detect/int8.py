"""int8 quantisation and the integer reference that the exported C must match bit for bit.

The integer path, after input quantisation, uses no floating point at all:

* **Input**: ``q = round_half_away(clamp((float32(x) - offset) * mult, -127, 127))`` in
  float32, where ``mult = IN_SCALE / scale``. This is the only float step; it is written
  with float32 operations in the same order as the C helper, so it is bit-exact too.
  One quantum is 1/IN_SCALE standard deviation; +-127 is +-CLIP (8) deviations.
* **Weights**: symmetric int8 per output row, ``w_q = round(w * 127 / max|row|)``.
* **Accumulation**: int32 sums of int8 x int8 products plus an int32 bias already in
  the accumulator's scale.
* **Requantisation** of an int32 accumulator ``acc`` by a real factor
  ``M / 2^(32 + t)`` (``M`` in [0, 2^31), ``t`` in [0, 30]), on the magnitude so that
  rounding is symmetric and C needs no right shift of a negative number
  (implementation-defined in C99)::

      mag = |acc|;  high = (mag * M + 2^31) >> 32;  r = (high + (2^t >> 1)) >> t
      result = -r if acc < 0 else r

  That is one 32x32->64 multiply and a few 32-bit operations on a Cortex-M4.
* **Activation** (autoencoder): tanh by a 256-entry int8 lookup table; the index is the
  pre-activation in units of 1/Z_SCALE, clamped to [-128, 127].
* **Score**: a sum of squared int32 residuals, each clamped to +-ERR_CLAMP, so the total
  fits in int32 for up to 256 features.

The scores are int32; the threshold is an int32. Everything here is numpy int64
arithmetic on values that cannot overflow it (the bounds are checked when quantising).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyward.detect._common import CLIP
from tinyward.detect._modelfile import LIMITS, Doc
from tinyward.detect.errors import DetectMisuse

IN_SCALE = 127.0 / CLIP  # input quanta per standard deviation
Z_SCALE = 32  # LUT index quanta per unit of pre-activation: covers tanh on [-4, 4)
ACT_SCALE = 127  # tanh output quanta
OUT_SCALE = 16  # Mahalanobis: quanta per whitened unit
ERR_CLAMP = 2047  # |residual| bound, so 256 * ERR_CLAMP^2 < 2^31
BIAS_LIMIT = 1 << 24  # |int32 bias| bound, so bias + 256 * 128 * 127 fits easily in int32
MULT_LOW, MULT_HIGH = 0, (1 << 31) - 1
SHIFT_LOW, SHIFT_HIGH = 0, 30
INT32_MAX = (1 << 31) - 1


# -- primitives -------------------------------------------------------------------------
def quantize_multiplier(real: float) -> tuple[int, int]:
    """Return (M, t) with M in [0, 2^31), t in [0, 30] and real ~= M / 2^(32 + t).

    Factors below 2^-62 lose precision (M shrinks; they scale to almost nothing anyway).

    Raises:
        DetectMisuse: ``real`` is not positive and finite or is 0.5 or more (weights
            too large for the int8 scales chosen here).
    """
    if not (real > 0.0 and math.isfinite(real)):
        raise DetectMisuse(f"cannot quantise multiplier {real}")
    fraction, exponent = math.frexp(real)  # real = fraction * 2^exponent, fraction in [0.5, 1)
    multiplier = round(fraction * (1 << 31))
    shift = -1 - exponent  # real = multiplier / 2^(32 + shift)
    if multiplier == 1 << 31:
        multiplier //= 2
        shift -= 1
    if shift < SHIFT_LOW:
        raise DetectMisuse(f"requantisation factor {real} is 0.5 or more; weights are too large")
    if shift > SHIFT_HIGH:
        multiplier = round(multiplier / 2.0 ** (shift - SHIFT_HIGH))
        shift = SHIFT_HIGH
    return multiplier, shift


def requantize(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Scale int accumulators by ``mult / 2^(32 + shift)`` per column, as the C does."""
    acc = np.asarray(acc, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    magnitude = np.abs(acc)
    high = np.right_shift(magnitude * np.asarray(mult, dtype=np.int64) + (1 << 31), 32)
    half = np.right_shift(np.left_shift(np.int64(1), shift), 1)
    rounded = np.right_shift(high + half, shift)
    return np.asarray(np.where(acc < 0, -rounded, rounded), dtype=np.int64)


def quantize_rows(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 weights in [-127, 127] and the per-row scales (quanta/unit)."""
    peak = np.max(np.abs(W), axis=1)
    scale = np.where(peak > 0, 127.0 / np.where(peak > 0, peak, 1.0), 1.0)
    Wq = np.clip(np.round(W * scale[:, None]), -127, 127).astype(np.int64)
    return Wq, scale


def quantize_bias(b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Bias in the accumulator's scale; refuses a bias too large for the int32 budget.

    Raises:
        DetectMisuse: a bias would exceed BIAS_LIMIT quanta.
    """
    bq = np.round(b * scale)
    if np.any(np.abs(bq) > BIAS_LIMIT):
        raise DetectMisuse("a bias is too large relative to its weights to quantise to int32")
    return np.asarray(bq, dtype=np.int64)


def multipliers(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(r)) for r in real]
    return (
        np.array([p[0] for p in pairs], dtype=np.int64),
        np.array([p[1] for p in pairs], dtype=np.int64),
    )


def tanh_lut() -> np.ndarray:
    """int8 tanh table: entry i holds round(127 * tanh((i - 128) / Z_SCALE))."""
    index = np.arange(-128, 128, dtype=np.float64)
    return np.asarray(np.round(ACT_SCALE * np.tanh(index / Z_SCALE)), dtype=np.int64)


# -- input quantisation -----------------------------------------------------------------
@dataclass(frozen=True)
class InputQuantizer:
    """float32 ``offset`` and ``mult`` per feature; see the module docstring."""

    offset: np.ndarray  # float32
    mult: np.ndarray  # float32

    @classmethod
    def from_standardizer(cls, mean: np.ndarray, scale: np.ndarray) -> InputQuantizer:
        return cls(
            offset=np.asarray(mean, dtype=np.float32),
            mult=np.asarray(IN_SCALE / scale, dtype=np.float32),
        )

    def quantize(self, X: np.ndarray) -> np.ndarray:
        """int8 (n, d) features, computed exactly as the C helper does in float32."""
        with np.errstate(over="ignore"):  # a huge feature saturates, as in C
            x32 = np.asarray(X, dtype=np.float32)
            v = (x32 - self.offset) * self.mult
        v = np.clip(v, np.float32(-127.0), np.float32(127.0))
        half = np.float32(0.5)
        up = np.trunc(v + half)
        down = -np.trunc(half - v)
        return np.asarray(np.where(v >= 0, up, down), dtype=np.int8)

    def to_json(self) -> dict[str, Any]:
        # float32 values are exact in a float64 JSON number.
        return {"offset": self.offset.astype(np.float64).tolist(),
                "mult": self.mult.astype(np.float64).tolist()}

    @classmethod
    def from_doc(cls, doc: Doc, d: int) -> InputQuantizer:
        offset = doc.floats("offset", (d,), bound=1e15)
        mult = doc.floats("mult", (d,), positive=True, bound=1e9)
        for key, value in (("offset", offset), ("mult", mult)):
            as32 = value.astype(np.float32)
            if not np.all(np.isfinite(as32)) or np.any(as32.astype(np.float64) != value):
                raise doc.fail(key, "holds a value that is not an exact float32")
        return cls(offset=offset.astype(np.float32), mult=mult.astype(np.float32))


def _check_q(Xq: np.ndarray, d: int) -> np.ndarray:
    Xq = np.asarray(Xq)
    if Xq.ndim != 2 or Xq.shape[1] != d or Xq.dtype != np.int8:
        raise DetectMisuse(f"quantised features must be int8 of shape (n, {d}), got "
                           f"{Xq.dtype} {Xq.shape}")
    return Xq.astype(np.int64)


# -- the two integer models ---------------------------------------------------------------
@dataclass(frozen=True)
class QAutoencoder:
    """int8 autoencoder: see the module docstring for every step."""

    inq: InputQuantizer
    W1: np.ndarray  # (h, d) int8 values
    b1: np.ndarray  # (h,) int32
    m1: np.ndarray  # (h,) multiplier to LUT index
    s1: np.ndarray  # (h,) shift
    W2: np.ndarray  # (d, h) int8 values
    b2: np.ndarray  # (d,) int32
    m2: np.ndarray  # (d,) multiplier to input quanta
    s2: np.ndarray  # (d,)
    lut: np.ndarray  # (256,) int8 values

    @property
    def n_features(self) -> int:
        return int(self.W1.shape[1])

    @property
    def hidden(self) -> int:
        return int(self.W1.shape[0])

    @classmethod
    def from_float(cls, mean: np.ndarray, scale: np.ndarray, W1: np.ndarray, b1: np.ndarray,
                   W2: np.ndarray, b2: np.ndarray) -> QAutoencoder:
        """Quantise a float autoencoder. Raises DetectMisuse if it cannot be represented."""
        W1q, sw1 = quantize_rows(W1)
        acc1_scale = IN_SCALE * sw1  # accumulator quanta per unit of pre-activation
        m1, s1 = multipliers(Z_SCALE / acc1_scale)
        W2q, sw2 = quantize_rows(W2)
        acc2_scale = ACT_SCALE * sw2
        m2, s2 = multipliers(IN_SCALE / acc2_scale)
        return cls(
            inq=InputQuantizer.from_standardizer(mean, scale),
            W1=W1q, b1=quantize_bias(b1, acc1_scale), m1=m1, s1=s1,
            W2=W2q, b2=quantize_bias(b2, acc2_scale), m2=m2, s2=s2,
            lut=tanh_lut(),
        )

    def score_q(self, Xq: np.ndarray) -> np.ndarray:
        """int32 scores of int8 vectors: sum of squared clamped residuals in input quanta.

        Raises:
            DetectMisuse: Xq is not int8 of shape (n, d).
        """
        x = _check_q(Xq, self.n_features)
        acc1 = x @ self.W1.T + self.b1
        index = np.clip(requantize(acc1, self.m1, self.s1), -128, 127)
        hidden = self.lut[index + 128]
        acc2 = hidden @ self.W2.T + self.b2
        out = requantize(acc2, self.m2, self.s2)
        err = np.clip(out - x, -ERR_CLAMP, ERR_CLAMP)
        return np.asarray(np.sum(err * err, axis=1), dtype=np.int32)

    def to_json(self) -> dict[str, Any]:
        return {"input": self.inq.to_json(),
                **{k: getattr(self, k).tolist()
                   for k in ("W1", "b1", "m1", "s1", "W2", "b2", "m2", "s2", "lut")}}

    @classmethod
    def from_doc(cls, doc: Doc, d: int, h: int) -> QAutoencoder:
        q = cls(
            inq=InputQuantizer.from_doc(doc.section("input"), d),
            W1=doc.ints("W1", (h, d), -127, 127),
            b1=doc.ints("b1", (h,), -BIAS_LIMIT, BIAS_LIMIT),
            m1=doc.ints("m1", (h,), MULT_LOW, MULT_HIGH),
            s1=doc.ints("s1", (h,), SHIFT_LOW, SHIFT_HIGH),
            W2=doc.ints("W2", (d, h), -127, 127),
            b2=doc.ints("b2", (d,), -BIAS_LIMIT, BIAS_LIMIT),
            m2=doc.ints("m2", (d,), MULT_LOW, MULT_HIGH),
            s2=doc.ints("s2", (d,), SHIFT_LOW, SHIFT_HIGH),
            lut=doc.ints("lut", (256,), -127, 127),
        )
        if d > LIMITS.max_features:
            raise doc.fail("W1", f"more than {LIMITS.max_features} features")
        return q

    def const_bytes(self) -> int:
        """Bytes of the C ``static const`` tables (weights, biases, multipliers, LUT, input)."""
        h, d = self.hidden, self.n_features
        return (h * d + d * h) + 4 * (h + d) + 4 * (h + d) + (h + d) + 256 + 8 * d

    def ops(self) -> int:
        """Quantise d, 2*d*h multiply-adds, h requantise+lookup, d requantise+square."""
        h, d = self.hidden, self.n_features
        return d + 2 * d * h + h + d


@dataclass(frozen=True)
class QMahalanobis:
    """int8 Mahalanobis: z = U x + b (U upper triangular, packed by rows), score = sum z^2."""

    inq: InputQuantizer
    U: np.ndarray  # packed upper triangle, d(d+1)/2 int8 values, row k holds U[k, k:]
    b: np.ndarray  # (d,) int32
    m: np.ndarray  # (d,) multiplier to OUT_SCALE quanta
    s: np.ndarray  # (d,)

    @property
    def n_features(self) -> int:
        return int(self.b.shape[0])

    @classmethod
    def from_float(cls, mean: np.ndarray, scale: np.ndarray, mu: np.ndarray,
                   U: np.ndarray) -> QMahalanobis:
        """Quantise ||U (z - mu)||^2. Raises DetectMisuse if it cannot be represented."""
        Uq, su = quantize_rows(np.triu(U))
        acc_scale = IN_SCALE * su
        m, s = multipliers(OUT_SCALE / acc_scale)
        d = U.shape[0]
        packed = np.concatenate([Uq[k, k:] for k in range(d)])
        return cls(inq=InputQuantizer.from_standardizer(mean, scale), U=packed,
                   b=quantize_bias(-(np.triu(U) @ mu), acc_scale), m=m, s=s)

    def unpacked(self) -> np.ndarray:
        d = self.n_features
        full = np.zeros((d, d), dtype=np.int64)
        start = 0
        for k in range(d):
            full[k, k:] = self.U[start : start + d - k]
            start += d - k
        return full

    def score_q(self, Xq: np.ndarray) -> np.ndarray:
        """int32 scores of int8 vectors: sum of squared whitened values in 1/16 units.

        Raises:
            DetectMisuse: Xq is not int8 of shape (n, d).
        """
        x = _check_q(Xq, self.n_features)
        acc = x @ self.unpacked().T + self.b
        z = np.clip(requantize(acc, self.m, self.s), -ERR_CLAMP, ERR_CLAMP)
        return np.asarray(np.sum(z * z, axis=1), dtype=np.int32)

    def to_json(self) -> dict[str, Any]:
        return {"input": self.inq.to_json(),
                **{k: getattr(self, k).tolist() for k in ("U", "b", "m", "s")}}

    @classmethod
    def from_doc(cls, doc: Doc, d: int) -> QMahalanobis:
        return cls(
            inq=InputQuantizer.from_doc(doc.section("input"), d),
            U=doc.ints("U", (d * (d + 1) // 2,), -127, 127),
            b=doc.ints("b", (d,), -BIAS_LIMIT, BIAS_LIMIT),
            m=doc.ints("m", (d,), MULT_LOW, MULT_HIGH),
            s=doc.ints("s", (d,), SHIFT_LOW, SHIFT_HIGH),
        )

    def const_bytes(self) -> int:
        d = self.n_features
        return d * (d + 1) // 2 + 4 * d + 4 * d + d + 8 * d

    def ops(self) -> int:
        """Quantise d, d(d+1)/2 multiply-adds, d requantise+square."""
        d = self.n_features
        return d + d * (d + 1) // 2 + d
