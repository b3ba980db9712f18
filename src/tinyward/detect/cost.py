"""Operations per inference: ours and KitNET's, counted the same way.

One "operation" is one multiply-add, one activation (lookup or sigmoid), one
normalisation of an input element, or one squared-error term. For an autoencoder with
``v`` inputs and ``h`` hidden units that is::

    v (normalise) + 2*v*h (encode + decode multiply-adds) + h (hidden activations)
      + [v (output activations), KitNET only] + v (squared error)

KitNET (Mirsky et al., NDSS 2018) maps n features into k clusters of at most m inputs
(m = 10), runs one autoencoder per cluster (hidden = ceil(0.75 v), sigmoid on both
layers), then an output autoencoder over the k RMSEs (hidden = ceil(0.75 k))::

    ops = sum_i (3 v_i + 2 v_i h_i + h_i)  +  (3 k + 2 k h_o + h_o)

For n = 100, m = 10 and the tightest clustering (10 clusters of 10, h = 8): 10 x 198 +
198 = 2,178 operations per packet (training updates not counted; a real clustering of
uneven sizes gives a similar figure, e.g. 20 clusters of 5 give 1,855).

KitNET's real per-packet cost also includes **AfterImage**, Kitsune's feature extractor
(``AfterImage.py`` and ``netStat.py`` of github.com/ymirsky/Kitsune-py). Per packet and
per decay factor (5 of them: 5, 3, 1, 0.1, 0.01) ``netStat.updateGetStats`` updates a 1D
stream (MAC-IP), two 1D+2D streams (host-host channel, socket) and a jitter stream.
Counting each add, subtract, multiply, divide, ``pow``, ``sqrt``, ``abs`` and value
compare as one operation, as our feature count does, with mean/variance/std that the
code caches counted only where it recomputes them:

* ``incStat.insert``: decay (dt, ``dt > 0``, ``-λ·dt``, ``pow(2, ·)``, three products)
  7, then ``CF1 += v``, ``v²``, ``CF2 += v²``, ``w += 1`` 4 → **11** (jitter: +2 for
  ``v = t - last``, ``> 0``);
* ``allstats_1D``: ``CF1/w``, ``CF2/w``, ``mean²``, subtract, ``abs`` → **5**;
* ``incStat_cov.update_cov``, first call (from ``insert``'s loop over the stream's covs):
  decay of the other stream 7, decay of the residual sums (dt, compare, ``-λ·dt``, pow,
  ``CF3``, ``w3``, ``lastRes``) 7, the mean 1, ``res = v - mean``, ``(v - mean)`` again
  and its product with the other residual, ``CF3 +=``, ``w3 += 1`` 5 → **20**;
* second ``update_cov`` (``update_get_2D_Stats`` calls it again with the same ``t``, so
  both decays stop at their compare): 2 + 2 + 5 → **9**;
* ``get_stats2``: radius ``sqrt(var₁² + var₂²)`` 4, magnitude ``sqrt(μ₁² + μ₂²)`` 4, cov
  ``CF3/w3`` 1, pcc (``sqrt`` for this stream's std, product, ``!= 0``, cov again,
  divide) 5 → **14**.

So a 1D stream costs 11 + 5 = 16, jitter 13 + 5 = 18, a 1D+2D stream 11 + 20 + 9 + 5 +
14 = 59, and per packet::

    afterimage_ops = L * (16 + 59 + 18 + 59) = 152 L   (L = 5 decay factors: 760)

This is a **lower bound**: it leaves out the dictionary lookups and the string keys built
per query (``ID + "_" + str(Lambda)``: 4 tables × 5 λ, more for ``register_cov``), the
scan of a host's cov list, and every cov update beyond the first when a host talks to
several peers (``insert`` updates all of its covs: +20 each), while our own feature count
includes one operation per CRC-32 byte of its three keys. Kitsune as published therefore
costs at least 2,178 + 760 = 2,938 operations per packet (:data:`KITSUNE_PIPELINE_OPS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

HIDDEN_RATIO = 0.75


def kitnet_ae_ops(v: int, hidden_ratio: float = HIDDEN_RATIO) -> int:
    """Operations of one KitNET autoencoder with ``v`` inputs (sigmoid on both layers)."""
    h = math.ceil(hidden_ratio * v)
    return 3 * v + 2 * v * h + h


def kitnet_ops(
    cluster_sizes: Sequence[int] | None = None,
    n_features: int = 100,
    max_ae: int = 10,
    hidden_ratio: float = HIDDEN_RATIO,
) -> int:
    """KitNET's operations per packet for the given clustering (default: even clusters).

    Raises:
        ValueError: cluster sizes that are empty, non-positive or above ``max_ae``.
    """
    if cluster_sizes is None:
        k = math.ceil(n_features / max_ae)
        base, extra = divmod(n_features, k)
        cluster_sizes = [base + (1 if i < extra else 0) for i in range(k)]
    sizes = list(cluster_sizes)
    if not sizes or any(s < 1 or s > max_ae for s in sizes):
        raise ValueError(f"cluster sizes must be in [1, {max_ae}], got {sizes}")
    return sum(kitnet_ae_ops(v, hidden_ratio) for v in sizes) + kitnet_ae_ops(
        len(sizes), hidden_ratio
    )


KITNET_100_OPS = kitnet_ops()


def autoencoder_ops(d: int, h: int) -> int:
    """Our autoencoder: normalise d, 2dh multiply-adds, h lookups, d squared errors."""
    return d + 2 * d * h + h + d


def hidden_for_budget(d: int, budget: int = KITNET_100_OPS // 10) -> int:
    """Hidden width ~d/5, at least 2, and small enough that ops stay within ``budget``."""
    wanted = max(2, math.ceil(d / 5))
    affordable = (budget - 2 * d) // (2 * d + 1)
    return max(2, min(wanted, affordable))


# AfterImage per decay factor (see the module docstring): MAC-IP 1D, host-host 1D+2D,
# host-host jitter 1D, socket 1D+2D.
_INSERT, _STATS_1D, _COV_FIRST, _COV_AGAIN, _STATS_2D, _JITTER_DIFF = 11, 5, 20, 9, 14, 2
AFTERIMAGE_1D_OPS = _INSERT + _STATS_1D
AFTERIMAGE_JITTER_OPS = _INSERT + _JITTER_DIFF + _STATS_1D
AFTERIMAGE_1D2D_OPS = _INSERT + _COV_FIRST + _COV_AGAIN + _STATS_1D + _STATS_2D
KITSUNE_LAMBDAS = (5.0, 3.0, 1.0, 0.1, 0.01)


def afterimage_ops(n_lambdas: int = len(KITSUNE_LAMBDAS)) -> int:
    """Lower bound of AfterImage's operations per packet with ``n_lambdas`` decay
    factors (Kitsune's ``netStat.updateGetStats``; 100 features for 5).

    Raises:
        ValueError: ``n_lambdas`` below 1.
    """
    if n_lambdas < 1:
        raise ValueError(f"n_lambdas must be at least 1, got {n_lambdas}")
    per_lambda = AFTERIMAGE_1D_OPS + 2 * AFTERIMAGE_1D2D_OPS + AFTERIMAGE_JITTER_OPS
    return n_lambdas * per_lambda


AFTERIMAGE_OPS = afterimage_ops()
KITSUNE_PIPELINE_OPS = KITNET_100_OPS + AFTERIMAGE_OPS
