"""Evaluation metrics and the MQTT protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinyward.detect.evaluate import (
    packet_files,
    plot_roc,
    roc_auc,
    roc_curve,
    summarise,
    tpr_at_fpr,
    write_json,
)


def test_tpr_at_fpr_lets_through_at_most_the_allowed_benign() -> None:
    benign = np.arange(1000, dtype=float)  # 0 … 999
    attack = np.array([990.5, 998.5, 999.5, 2000.0])
    # 0.1 % of 1000 = 1 benign false positive allowed -> threshold 998
    assert tpr_at_fpr(benign, attack, 0.001) == 0.75
    # 1 % -> 10 allowed -> threshold 989
    assert tpr_at_fpr(benign, attack, 0.01) == 1.0
    assert tpr_at_fpr(benign, np.array([5.0]), 0.0) == 0.0


def test_roc_auc_matches_sklearn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    benign = rng.integers(0, 20, 500).astype(float)
    attack = rng.integers(5, 25, 300).astype(float)
    expected = roc_auc_score(np.r_[np.zeros(500), np.ones(300)], np.r_[benign, attack])
    assert roc_auc(benign, attack) == pytest.approx(expected, abs=1e-12)
    fpr, tpr = roc_curve(benign, attack)
    assert np.trapezoid(tpr, fpr) == pytest.approx(expected, abs=1e-9)


def test_summary_counts_false_alarms_per_hour() -> None:
    benign = np.r_[np.zeros(99), 10.0]
    result = summarise(benign, {"a": np.array([5.0, 20.0])}, threshold=8.0, benign_hours=0.5)
    assert result["benign_false_alarms"] == 1 and result["false_alarms_per_hour"] == 2.0
    assert result["per_attack"]["a"]["detected_at_threshold"] == 0.5


def test_protocol_files_keep_train_and_test_apart(mqtt: Path) -> None:
    files = packet_files(mqtt)
    assert [p.name for p in files["train"]] == ["benign-5mb-train.pcap"]
    assert [p.name for p in files["benign"]] == ["benign-5mb-test.pcap"]
    for attack in ("bruteforce", "flood", "malariados", "malformed", "slowite"):
        assert len(files[attack]) == 2
    everything = [p for paths in files.values() for p in paths]
    assert len(set(everything)) == len(everything)


def test_json_and_plot_are_written(tmp_path: Path) -> None:
    write_json(tmp_path / "r.json", {"a": np.float64(0.5), "b": float("nan"), "_scores": [1]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 0.5, "b": None}
    rng = np.random.default_rng(1)
    plot_roc(
        {"x": {"benign": rng.normal(size=200), "atk": rng.normal(2, 1, 50)}},
        tmp_path / "roc.png",
        "t",
    )
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _many_curves(detectors: int, attacks: int) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(2)
    return {f"detector-{d} removed": {
        "benign": rng.normal(size=300),
        **{f"attack-{a}": rng.normal(0.5 + 0.3 * a, 1, 80) for a in range(attacks)}}
        for d in range(detectors)}


def test_roc_plot_of_24_curves_stays_readable() -> None:
    """4 detectors x 6 attacks: one panel per attack, each detector one look everywhere,
    and a legend that covers no panel (the old plot: 24 curves on a 10-colour cycle, the
    legend over them)."""
    import matplotlib.pyplot as plt

    from tinyward.detect.evaluate import roc_figure

    fig = roc_figure(_many_curves(4, 6), "t")
    try:
        fig.canvas.draw()
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert sorted(ax.get_title() for ax in panels) == [f"attack-{a}" for a in range(6)]
        looks: dict[str, set[tuple[str, str]]] = {}
        for ax in panels:
            curves = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
            assert len(curves) == 4
            for line in curves:
                looks.setdefault(line.get_label(), set()).add(
                    (str(line.get_color()), str(line.get_linestyle())))
        assert all(len(look) == 1 for look in looks.values()), looks  # same look everywhere
        assert len({next(iter(look)) for look in looks.values()}) == 4  # and all different
        (legend,) = fig.legends
        assert len(legend.get_texts()) == 4
        box = legend.get_window_extent()
        assert not any(box.overlaps(ax.get_window_extent()) for ax in panels)
    finally:
        plt.close(fig)


def test_the_overlap_check_sees_a_legend_over_the_curves() -> None:
    """A control: a legend put inside a panel (as the old plot did) fails the check."""
    import matplotlib.pyplot as plt

    from tinyward.detect.evaluate import roc_figure

    fig = roc_figure(_many_curves(2, 1), "t")
    try:
        (ax,) = [a for a in fig.axes if a.get_visible()]
        inside = ax.legend(loc="lower right")
        fig.canvas.draw()
        assert inside.get_window_extent().overlaps(ax.get_window_extent())
    finally:
        plt.close(fig)
