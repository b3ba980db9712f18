"""The operation counts behind the "ten times fewer operations" comparison."""

import pytest

from tinyward.detect import cost


def test_afterimage_count_follows_its_stated_formula() -> None:
    # per decay factor: MAC-IP 1D (11 + 5), host-host and socket 1D+2D (11+20+9+5+14
    # each), jitter 1D (11 + 2 + 5)
    assert cost.AFTERIMAGE_1D2D_OPS == 59
    assert cost.afterimage_ops(1) == 16 + 2 * 59 + 18 == 152
    assert cost.AFTERIMAGE_OPS == 5 * 152 == 760
    assert cost.KITSUNE_PIPELINE_OPS == cost.KITNET_100_OPS + 760 == 2178 + 760
    with pytest.raises(ValueError):
        cost.afterimage_ops(0)


def test_kitnet_model_count_is_unchanged() -> None:
    assert cost.KITNET_100_OPS == 2178
    assert cost.kitnet_ops([5] * 20) == 1855
