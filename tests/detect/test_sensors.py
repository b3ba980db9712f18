"""Sensor CSVs, tamper injection and tamper detection on SKAB's real signals.

The attacks here are INJECTED into SKAB's anomaly-free recordings (SKAB has physical
faults, not attacks); the test says so by using tinyward.detect.tamper.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyward.detect.errors import CsvError, DetectMisuse
from tinyward.detect.evaluate import roc_auc, sensor_streams, tpr_at_fpr
from tinyward.detect.sensorfeatures import (
    FAMILIES,
    SKAB_CHANNELS,
    SensorFeatureConfig,
    SensorFeatureExtractor,
    read_sensor_csv,
    sensor_extractor_from_doc,
    sensor_extractor_to_doc,
)
from tinyward.detect.tamper import (
    INJECTED_NOTE,
    TAMPER_KINDS,
    Injection,
    inject,
    tamper_stream,
    window_kind,
)

HEADER = "datetime;" + ";".join(SKAB_CHANNELS)


def _csv(tmp_path: Path, lines: list[str], name: str = "s.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_skab_anomaly_free(skab: Path) -> None:
    table = read_sensor_csv(skab / "anomaly-free" / "anomaly-free.csv")
    assert table.values.shape == (9405, 8) and table.labels is None
    run = read_sensor_csv(skab / "valve1" / "1.csv")
    assert run.labels is not None and set(np.unique(run.labels)) == {0.0, 1.0}


def test_missing_column_names_file_line_and_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["datetime;Current;Pressure", "2020-01-01;1;2"])
    with pytest.raises(
        CsvError, match=r"s\.csv: line 1, column 'Accelerometer1RMS': missing column"
    ):
        read_sensor_csv(path)


def test_non_numeric_cell_names_position_and_keeps_rows(tmp_path: Path) -> None:
    good = "t;" + ";".join(["1.5"] * 8)
    bad = "t;1;2;3;oops;5;6;7;8"
    path = _csv(tmp_path, [HEADER, good, good, bad, good])
    with pytest.raises(CsvError) as caught:
        read_sensor_csv(path)
    error = caught.value
    assert (error.line, error.column) == (4, "Pressure")
    assert "line 4, column 'Pressure': not a number: 'oops'" in str(error)
    assert len(error.partial) == 2


def test_short_row_nan_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(CsvError, match="line 2, column 'Voltage': row has 7 cells"):
        read_sensor_csv(_csv(tmp_path, [HEADER, "t;1;2;3;4;5;6"]))
    with pytest.raises(CsvError, match="not a finite number: 'nan'"):
        read_sensor_csv(_csv(tmp_path, [HEADER, "t;1;2;3;4;5;6;nan;8"]))
    with pytest.raises(CsvError, match="no data rows"):
        read_sensor_csv(_csv(tmp_path, [HEADER]))
    with pytest.raises(CsvError, match="empty file"):
        read_sensor_csv(_csv(tmp_path, []))
    with pytest.raises(CsvError, match="cannot open"):
        read_sensor_csv(tmp_path / "absent.csv")


def test_comma_file_read_with_semicolon_says_which_delimiter(tmp_path: Path) -> None:
    path = _csv(tmp_path, [HEADER.replace(";", ","), "t," + ",".join(["1"] * 8)])
    with pytest.raises(CsvError, match="delimiter ';'"):
        read_sensor_csv(path)
    assert read_sensor_csv(path, delimiter=",").values.shape == (1, 8)


@pytest.fixture(scope="module")
def clean(skab: Path) -> np.ndarray:
    return read_sensor_csv(skab / "anomaly-free" / "anomaly-free.csv").values


def test_each_tamper_kind_changes_only_its_segment(clean: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    for kind in TAMPER_KINDS:
        channel = -1 if kind == "replay" else 3
        out = inject(clean[:2000], Injection(kind, 1000, 120, channel), rng)
        changed = np.flatnonzero(np.any(out != clean[:2000], axis=1))
        assert changed.size and changed.min() >= 1000 and changed.max() < 1120, kind
    frozen = inject(clean[:2000], Injection("freeze", 1000, 120, 2), rng)
    assert np.all(frozen[1000:1120, 2] == clean[999, 2])
    replayed = inject(clean[:2000], Injection("replay", 1000, 120, -1), rng)
    earlier = [
        lag
        for lag in range(180, 721)
        if np.array_equal(replayed[1000:1120], clean[1000 - lag : 1120 - lag])
    ]
    assert earlier


def test_tampering_is_seeded_and_labelled(clean: np.ndarray) -> None:
    a = tamper_stream(clean[5000:], seed=3)
    b = tamper_stream(clean[5000:], seed=3)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.note == INJECTED_NOTE and "INJECTED" in a.note
    assert {i.kind for i in a.injections} == set(TAMPER_KINDS)
    assert a.labels.sum() == 120 * len(a.injections)
    with pytest.raises(DetectMisuse):
        inject(clean[:100], Injection("melt", 10, 20, 0), np.random.default_rng(0))


def test_a_spike_window_without_a_spike_is_not_labelled_tampered(clean: np.ndarray) -> None:
    """Protocol: a window inside a spike segment that holds none of the spikes is exactly
    the clean signal, so it must not count as tampered (it once did: a third of them)."""
    stream = tamper_stream(clean[5000:], kinds=("spikes",), seed=3)
    assert stream.altered is not None
    injection = stream.injections[0]
    segment = slice(injection.start, injection.start + injection.length)
    spiked = np.flatnonzero(stream.altered[segment]) + injection.start
    assert len(spiked) == injection.length // 30
    channel = injection.channel
    assert np.all(stream.values[spiked, channel] != clean[5000:][spiked, channel])
    empty = [b for b in range(injection.start, injection.start + injection.length - 29)
             if not stream.altered[b : b + 30].any()]
    holding = [b for b in range(injection.start, injection.start + injection.length - 29)
               if stream.altered[b : b + 30].any()]
    assert holding and all(window_kind(stream, b, b + 30) == "spikes" for b in holding)
    assert all(window_kind(stream, b, b + 30) is None for b in empty)
    # every other kind alters its whole segment: the half-covered rule alone decides
    other = tamper_stream(clean[5000:], kinds=("bias",), seed=3)
    assert other.altered is not None
    np.testing.assert_array_equal(other.altered, other.labels == 1)
    start = other.injections[0].start
    assert window_kind(other, start - 14, start + 16) == "bias"
    assert window_kind(other, start - 16, start + 14) is None


def test_extractor_state_round_trips(clean: np.ndarray) -> None:
    extractor = SensorFeatureExtractor(SKAB_CHANNELS)
    extractor.fit(clean[:1500])
    restored = sensor_extractor_from_doc(sensor_extractor_to_doc(extractor))
    np.testing.assert_array_equal(
        extractor.copy().transform(clean[1500:2000]), restored.transform(clean[1500:2000])
    )
    doc = sensor_extractor_to_doc(extractor)
    doc["coef"] = [[1.0]]
    with pytest.raises(DetectMisuse, match="coef"):
        sensor_extractor_from_doc(doc)


def test_windows_are_the_same_however_the_stream_is_chunked(clean: np.ndarray) -> None:
    extractor = SensorFeatureExtractor(SKAB_CHANNELS)
    extractor.fit(clean[:1500])
    whole = extractor.copy().transform(clean[1500:2500])
    chunked = extractor.copy()
    parts = [chunked.transform(clean[i : i + 77]) for i in range(1500, 2500, 77)]
    np.testing.assert_allclose(np.vstack(parts), whole, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_injected_freeze_and_replay_are_detected_on_skab(skab: Path) -> None:
    """tinyward's int8 Mahalanobis detector, fitted on benign SKAB windows only, on
    tampering INJECTED into SKAB's real anomaly-free signals."""
    from tinyward.detect.models import make_detector

    streams = sensor_streams(skab, seed=0)
    assert "INJECTED" in streams.note
    detector = make_detector("mahalanobis-int8")
    detector.fit(streams.train, seed=0)
    benign = detector.score(streams.benign)
    results = {
        kind: (roc_auc(benign, detector.score(x)), tpr_at_fpr(benign, detector.score(x), 0.01))
        for kind, x in streams.attacks.items()
    }
    assert all(len(x) >= 40 for x in streams.attacks.values())
    assert results["replay"][0] > 0.95 and results["replay"][1] > 0.8, results
    assert results["freeze"][0] > 0.9 and results["freeze"][1] > 0.5, results
    assert min(auc for auc, _ in results.values()) > 0.55, results
    # and it stays quiet on clean data (measured 0.23 % of benign windows above its
    # threshold, 0.8 false alarms/h; an intermediate version of the features reached
    # 1.15 %: the random-holdout threshold is fragile, which detect/threshold.py fixes).
    assert np.mean(benign > detector.threshold) < 0.015


def _features_of(extractor: SensorFeatureExtractor, values: np.ndarray) -> dict[str, np.ndarray]:
    rows = extractor.copy().transform(values)
    return {name: rows[:, i] for i, name in enumerate(extractor.feature_names)}


def test_bias_raises_shift_and_cusum_and_spikes_raise_spike_local(clean: np.ndarray) -> None:
    """The local-scale tampering features move on a bias and on spikes injected into a
    real benign stretch, and stay where benign puts them on the clean one."""
    extractor = SensorFeatureExtractor(SKAB_CHANNELS, SensorFeatureConfig(families=FAMILIES))
    extractor.fit(clean[:3000])
    stretch = clean[3000:4200]
    rng = np.random.default_rng(1)
    biased = inject(stretch, Injection("bias", 800, 300, 3), rng)
    spiky = inject(stretch, Injection("spikes", 800, 300, 2), rng)
    base = _features_of(extractor, stretch)
    bias = _features_of(extractor, biased)
    spikes = _features_of(extractor, spiky)
    after = slice(80, 105)  # windows wholly inside the segment (10-sample steps)
    assert bias["shift_max"][after].mean() > base["shift_max"][after].mean() + 0.5
    # the CUSUM of the biased channel (feature: the largest over channels)
    cusums = []
    for values in (stretch, biased):
        stream = extractor.copy()
        stream.transform(values[:1100])
        cusums.append(float(stream._cusum[[0, 2], 3].max()))
    assert cusums[1] > cusums[0] + 5.0, cusums
    assert spikes["spike_local"][after].max() > base["spike_local"][after].max()
    np.testing.assert_array_equal(base["shift_max"][:75], bias["shift_max"][:75])


def test_zrough_sees_added_noise_that_the_level_features_miss(clean: np.ndarray) -> None:
    """Noise added to one channel (3x its median |step|, the tamper kind) roughens it:
    zrough (the window's mean |step| over the channel's recent one) rises inside the
    segment while zlevel, the window mean against its yardstick, barely moves; on the
    clean stretch zrough stays where benign puts it."""
    extractor = SensorFeatureExtractor(SKAB_CHANNELS, SensorFeatureConfig(families=FAMILIES))
    extractor.fit(clean[:3000])
    stretch = clean[3000:4200]
    rng = np.random.default_rng(2)
    noisy = inject(stretch, Injection("noise", 800, 300, 0), rng)
    base, noise = _features_of(extractor, stretch), _features_of(extractor, noisy)
    inside = slice(80, 105)  # windows wholly inside the segment (10-sample steps)
    benign_high = float(np.quantile(base["zrough_max"], 0.99))
    assert np.mean(noise["zrough_max"][inside] > benign_high) > 0.9
    assert noise["zlevel_max"][inside].mean() < base["zlevel_max"][inside].mean() + 0.5
    np.testing.assert_array_equal(base["zrough_max"][:75], noise["zrough_max"][:75])


def test_state_saved_before_zrough_loads_only_without_it(clean: np.ndarray) -> None:
    """A model saved before the zrough family has no rough_center/rough_scale: it loads
    (and scores as before) when zrough is off, and is refused when zrough is on."""
    for families, loads in ((("stuck", "zlevel"), True), (("stuck", "zrough"), False)):
        extractor = SensorFeatureExtractor(SKAB_CHANNELS, SensorFeatureConfig(families=families))
        extractor.fit(clean[:1500])
        doc = sensor_extractor_to_doc(extractor)
        del doc["rough_center"], doc["rough_scale"]
        if loads:
            restored = sensor_extractor_from_doc(doc)
            np.testing.assert_array_equal(extractor.copy().transform(clean[1500:1800]),
                                          restored.transform(clean[1500:1800]))
        else:
            with pytest.raises(DetectMisuse, match="rough_center"):
                sensor_extractor_from_doc(doc)


def test_compact_and_per_channel_feature_sets() -> None:
    compact = SensorFeatureExtractor(SKAB_CHANNELS, SensorFeatureConfig(families=FAMILIES))
    full = SensorFeatureExtractor(
        SKAB_CHANNELS, SensorFeatureConfig(per_channel=True, families=FAMILIES)
    )
    assert compact.n_features == 22 and full.n_features == 22 + 3 * len(SKAB_CHANNELS)  # lagz: 22
    assert set(compact.feature_names) < set(full.feature_names)
    with pytest.raises(DetectMisuse, match="per_channel"):
        SensorFeatureConfig(per_channel=1)  # type: ignore[arg-type]


def test_saved_state_refuses_bad_new_scales(clean: np.ndarray) -> None:
    extractor = SensorFeatureExtractor(SKAB_CHANNELS)
    extractor.fit(clean[:1500])
    extractor.transform(clean[1500:1600])
    for key, value in (
        ("shift_scale", [[1.0] * 8]),
        ("spike_threshold", [0.0] * 8),
        ("cusum", [[0.0] * 8] * 3),
        ("local", [[0.0] * 8] * 3),
        ("rough_scale", [0.0] * 8),
        ("rough_ref", [0.0] * 8),  # zrough divides by it
        ("rough_n", -1.0),
    ):
        doc = sensor_extractor_to_doc(extractor)
        doc[key] = value
        with pytest.raises(DetectMisuse):
            sensor_extractor_from_doc(doc)
