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
    return sum(kitnet_ae_ops(v, hidden_ratio) for v in sizes) + kitnet_ae_ops(len(sizes), hidden_ratio)


KITNET_100_OPS = kitnet_ops()


def autoencoder_ops(d: int, h: int) -> int:
    """Our autoencoder: normalise d, 2dh multiply-adds, h lookups, d squared errors."""
    return d + 2 * d * h + h + d


def hidden_for_budget(d: int, budget: int = KITNET_100_OPS // 10) -> int:
    """Hidden width ~d/5, at least 2, and small enough that ops stay within ``budget``."""
    wanted = max(2, math.ceil(d / 5))
    affordable = (budget - 2 * d) // (2 * d + 1)
    return max(2, min(wanted, affordable))
