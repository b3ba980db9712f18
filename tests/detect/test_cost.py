"""The operation counts behind the "ten times fewer operations" comparison.

Each count is checked against something it did not compute itself: the layer shapes of a
real KitNET (pysad's) and of a trained tinyward autoencoder, and the figures the docs quote.
"""

import numpy as np
import pytest

from tinyward.detect import cost
from tinyward.detect.netfeatures import N_FEATURES


def _ae_ops(v: int, h: int, output_activations: bool) -> int:
    """Counted by hand from one autoencoder's shape: normalise v, encode v*h and decode
    h*v multiply-adds, h hidden activations, [v output activations], v squared errors."""
    return v + v * h + h * v + h + (v if output_activations else 0) + v


def test_kitnet_count_matches_the_layers_of_a_real_kitnet() -> None:
    from tinyward.detect.baselines import KitNETBaseline

    baseline = KitNETBaseline(max_size_ae=10, seed=0)
    baseline.fit(np.random.default_rng(0).normal(size=(300, 23)))
    layers = baseline._layers()  # the ensemble, then the output autoencoder
    by_shape = sum(_ae_ops(a.n_visible, a.n_hidden, output_activations=True) for a in layers)
    sizes = [a.n_visible for a in layers[:-1]]
    assert sum(sizes) == 23 and layers[-1].n_visible == len(sizes)
    assert cost.kitnet_ops(sizes) == by_shape == baseline.ops_per_inference()


def test_our_autoencoder_count_matches_its_trained_weights() -> None:
    from tinyward.detect.models import AutoencoderDetector

    detector = AutoencoderDetector(epochs=1, max_steps=5)
    detector.fit_weights(np.random.default_rng(1).normal(size=(200, N_FEATURES)), seed=1)
    h, d = detector.W1.shape
    assert detector.W2.shape == (d, h) and d == N_FEATURES
    assert detector.ops_per_inference() == _ae_ops(d, h, output_activations=False)


# Up to 35 inputs a hidden width of 2 or more fits in the budget (above, 6d + 2 > 217);
# the packet features are well inside that.
@pytest.mark.parametrize("d", sorted({*range(1, 36), N_FEATURES}))
def test_the_chosen_hidden_width_keeps_a_tenth_of_kitnets_operations(d: int) -> None:
    h = cost.hidden_for_budget(d)
    assert h >= 2
    assert cost.autoencoder_ops(d, h) <= cost.KITNET_100_OPS // 10


def test_afterimage_grows_with_each_decay_factor_and_refuses_none() -> None:
    one = cost.afterimage_ops(1)
    assert one > 0 and all(cost.afterimage_ops(n) == n * one for n in range(1, 8))
    assert cost.afterimage_ops(len(cost.KITSUNE_LAMBDAS)) == cost.AFTERIMAGE_OPS
    assert cost.KITSUNE_PIPELINE_OPS == cost.KITNET_100_OPS + cost.AFTERIMAGE_OPS
    with pytest.raises(ValueError):
        cost.afterimage_ops(0)


def test_the_docs_quote_the_figures_the_code_computes() -> None:
    doc = cost.__doc__ or ""
    for figure in (cost.KITNET_100_OPS, cost.kitnet_ops([5] * 20), cost.AFTERIMAGE_OPS,
                   cost.KITSUNE_PIPELINE_OPS, cost.afterimage_ops(1)):
        assert f"{figure:,}" in doc or str(figure) in doc, figure
