"""Any sensor CSV: the failure modes issue 13 found on a 36-signal industrial log,
reproduced on a synthetic 36-channel set (near-constant, on/off and drifting channels)
and on SKAB's real files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tinyward.detect import pipeline
from tinyward.detect.errors import CsvError, DetectMisuse
from tinyward.detect.sensorfeatures import (
    FAMILIES,
    SensorChannelWarning,
    SensorFeatureConfig,
    SensorFeatureExtractor,
    parse_families,
    read_sensor_csv,
    screen_channels,
)
from tinyward.detect.threshold import Policy, ThresholdWarning, calibrate


def _synthetic(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """36 channels: 30 slowly drifting analogue ones (3-decimal resolution), one non-zero
    in a single row, one constant, four on/off status channels."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    cols = {f"s{i}": np.round(np.sin(t / 50 + i) + 0.001 * t + rng.normal(0, 0.1, n), 3)
            for i in range(30)}
    rare = np.zeros(n)
    rare[n // 2] = 5.0
    cols["rare"] = rare
    cols["const"] = np.full(n, 2.0)
    for i in range(4):
        cols[f"onoff{i}"] = ((t // (100 + 20 * i)) % 2).astype(float)
    return cols


def _write(path: Path, cols: dict[str, np.ndarray], delimiter: str = ",") -> Path:
    names = list(cols)
    n = len(cols[names[0]])
    lines = [delimiter.join(["time", *names, "anomaly"])]
    lines += [delimiter.join([f"t{r}", *(f"{cols[c][r]:g}" for c in names), "0"])
              for r in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("synthetic")
    return (_write(folder / "train.csv", _synthetic(1731, 0)),
            _write(folder / "test.csv", _synthetic(1200, 1)))


def test_any_csv_takes_every_numeric_column_with_a_sniffed_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "plant.csv"
    path.write_text("stamp,a,b,label\n2020-01-01,1,2.5,0\n2020-01-02,3,4,1\n")
    table = read_sensor_csv(path, None, delimiter=None, label_column="label",
                            time_column="stamp")
    assert table.channels == ("a", "b") and table.delimiter == ","
    assert table.labels is not None and table.labels.tolist() == [0.0, 1.0]
    assert table.times == ["2020-01-01", "2020-01-02"] and table.lines.tolist() == [2, 3]
    with pytest.raises(CsvError, match=r"line 3, column 'b': not a number"):
        path.write_text("a;b\n1;2\n3;x\n")
        read_sensor_csv(path, None, delimiter=None)


def test_a_column_named_twice_is_refused_not_read_once(tmp_path: Path) -> None:
    # header.index() took the first 'a' twice and dropped the second column unread.
    path = tmp_path / "dup.csv"
    path.write_text("a;a;b;label\n1;2;3;0\n4;5;6;1\n")
    for channels in (None, ["a", "b"]):
        with pytest.raises(CsvError, match=r"line 1, column 'a': .*'a' named more than once"):
            read_sensor_csv(path, channels, label_column="label")
    path.write_text("a;b;label;label\n1;2;0;1\n")
    with pytest.raises(CsvError, match=r"'label' named more than once"):
        read_sensor_csv(path, ["a", "b"], label_column="label")
    path.write_text("a;b;c;c\n1;2;3;4\n")  # an unused duplicate loses nothing asked for
    assert read_sensor_csv(path, ["a", "b"]).values.tolist() == [[1.0, 2.0]]


def test_constant_and_near_constant_channels_are_dropped_with_a_warning_naming_them(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = synthetic
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = pipeline.train([train], packets=False, kind="mahalanobis")
    messages = [str(w.message) for w in caught if issubclass(w.category, SensorChannelWarning)]
    assert any("'rare'" in m and "1 of 1731" in m for m in messages), messages
    assert any("'const'" in m and "constant" in m for m in messages), messages
    channels = model.features.extractor.channels
    assert "rare" not in channels and "const" not in channels and "onoff0" in channels
    assert len(channels) == 34
    # the extractor itself refuses a constant channel instead of dividing by ~0
    values = np.c_[np.random.default_rng(0).normal(size=(200, 1)), np.ones(200)]
    with pytest.raises(DetectMisuse, match="constant channel"):
        SensorFeatureExtractor(["x", "flat"]).fit(values)


def test_scale_floors_come_from_the_data_resolution(synthetic: tuple[Path, Path]) -> None:
    """A near-constant channel kept on purpose (screening off) must not blow the
    residual scales up on benign data: every scale is floored at the channel's
    quantisation noise, not at 1e-9/1e-6."""
    train, test = synthetic
    a = read_sensor_csv(train, None, delimiter=None)
    b = read_sensor_csv(test, None, delimiter=None)
    keep, _ = screen_channels(a.values, a.channels, min_share=0.0)  # keeps 'rare'
    extractor = SensorFeatureExtractor([a.channels[i] for i in keep],
                                       SensorFeatureConfig(families=FAMILIES))
    X = extractor.fit(a.values[:, keep])
    rare = list(extractor.channels).index("rare")
    assert extractor.std[rare] >= 5.0 / np.sqrt(12) - 1e-12
    assert extractor.residual_std[rare] >= extractor.quantum[rare] > 0.1
    held_out = extractor.copy()
    held_out.reset_stream()
    Y = held_out.transform(b.values[:, keep])
    names = list(extractor.feature_names)
    for name in ("residual_dev_max", "zresid_max", "level_dev_max", "noise_floor"):
        column = names.index(name)
        # log1p-compressed: 4.4 is 80 robust spreads
        assert np.max(Y[:, column]) < 4.4, (name, np.max(Y[:, column]))
    assert np.isfinite(X).all() and np.isfinite(Y).all()


def test_stuck_stays_quiet_on_on_off_channels_and_fires_on_a_freeze(
    synthetic: tuple[Path, Path],
) -> None:
    train, test = synthetic
    a = read_sensor_csv(train, None, delimiter=None)
    b = read_sensor_csv(test, None, delimiter=None)
    keep, _ = screen_channels(a.values, a.channels)
    extractor = SensorFeatureExtractor([a.channels[i] for i in keep],
                                       SensorFeatureConfig(families=("stuck",)))
    extractor.fit(a.values[:, keep])
    clean = b.values[:, keep]
    stream = extractor.copy()
    stream.reset_stream()
    benign = stream.transform(clean)[:, 0]
    # The old rule (largest repeat fraction over channels) sits near 1 on every window
    # here, because on/off channels repeat naturally; the learnt per-channel rate does not.
    old = np.array([np.max(np.mean(np.abs(np.diff(clean[i : i + 30], axis=0)) < 1e-9, axis=0))
                    for i in range(0, len(clean) - 30, 10)])
    assert np.mean(old > 0.9) > 0.99
    assert np.quantile(benign, 0.99) < 0.2, np.quantile(benign, 0.99)
    frozen = clean.copy()
    frozen[600:720, 3] = frozen[599, 3]
    stream = extractor.copy()
    stream.reset_stream()
    attacked = stream.transform(frozen)[:, 0]
    inside = (stream.last_window_ends > 630) & (stream.last_window_ends <= 720)
    assert np.all(attacked[inside] > 0.5)


def test_feature_families_switch_and_unknown_ones_are_refused() -> None:
    only = SensorFeatureExtractor(["a", "b"], SensorFeatureConfig(families=("stuck", "zstep")))
    assert only.feature_names == ("stuck", "zstep_hold")
    assert parse_families("zstep, stuck") == ("stuck", "zstep")
    assert parse_families("all") == FAMILIES
    with pytest.raises(DetectMisuse, match="unknown feature family 'magic'"):
        parse_families("stuck,magic")
    with pytest.raises(DetectMisuse, match="unknown feature family"):
        SensorFeatureConfig(families=("level", "nope"))


def test_raw_row_model_scores_every_row_and_maps_rows(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    train, test = synthetic
    options = pipeline.SensorOptions(raw_rows=True, time_column="time")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SensorChannelWarning)
        model = pipeline.train([train], packets=False, kind="mahalanobis", sensor=options)
    path = tmp_path / "raw.json"
    pipeline.save_model(model, path)
    scored = pipeline.score_file(pipeline.load_model(path), test)
    assert len(scored.scores) == 1200 and scored.rows is not None
    assert scored.rows.tolist() == list(range(1200))
    assert scored.lines is not None and scored.lines[0] == 2
    assert scored.times is not None and scored.times[:2] == ["t0", "t1"]


def test_window_scores_map_to_the_last_row_they_cover(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    train, test = synthetic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SensorChannelWarning)
        model = pipeline.train([train], packets=False, kind="mahalanobis",
                               sensor=pipeline.SensorOptions(window=20, step=5,
                                                             time_column="time"))
    scored = pipeline.score_file(model, test)
    assert scored.rows is not None and scored.rows[:3].tolist() == [19, 24, 29]
    assert scored.lines is not None and scored.lines[:3].tolist() == [21, 26, 31]
    out = tmp_path / "scores.csv"
    pipeline.write_scores_csv(scored, out)
    header, first = out.read_text().splitlines()[:2]
    assert header == "index,score,alarm,row,line,time" and first.endswith(",19,21,t19")


def test_smoothing_kofn_and_ewma() -> None:
    kofn = pipeline.Smoother.parse("kofn:2/3")
    _, alarms = kofn.apply(np.array([5.0, 0, 0, 5, 5, 0, 0]), 1.0)
    assert alarms.tolist() == [False, False, False, False, True, True, False]
    ewma = pipeline.Smoother.parse("ewma:0.5")
    smoothed, _ = ewma.apply(np.array([0.0, 4.0, 0.0]), 1.0)
    assert smoothed.tolist() == [0.0, 2.0, 1.0]
    for bad in ("ewma:0", "kofn:4/3", "median:3"):
        with pytest.raises(DetectMisuse):
            pipeline.Smoother.parse(bad)


def test_ewma_smoothing_rechooses_its_threshold_and_survives_save(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    train, test = synthetic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SensorChannelWarning)
        model = pipeline.train([train], packets=False, kind="mahalanobis",
                               sensor=pipeline.SensorOptions(smooth="ewma:0.3"))
    assert isinstance(model.features, pipeline.SensorFeatures)
    smoother = model.features.smoother
    assert smoother is not None and smoother.threshold is not None
    # re-chosen on the smoothed benign training scores, each file its own stream
    extractor = model.features.extractor.copy()
    extractor.reset_stream()
    values = read_sensor_csv(train, extractor.channels, delimiter=None).values
    smoothed, _ = smoother.apply(model.detector.score(extractor.transform(values)), 0.0)
    # The project's rule (tinyward.detect.threshold), computed here from its parts: peaks
    # over threshold on the LATER contiguous quarter of the smoothed benign scores, never
    # on all of them nor on the raw scores' threshold.
    later = smoothed[len(smoothed) - int(len(smoothed) * Policy().fraction):]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ThresholdWarning)
        expected = calibrate(later, 0.001, policy=Policy(on_insufficient="warn"))
        on_all = calibrate(smoothed, 0.001, policy=Policy(on_insufficient="warn"))
    assert smoother.threshold == expected.threshold
    # ... which is a choice: the whole stretch, or the detector's own threshold on
    # unsmoothed scores, would give other thresholds
    assert on_all.threshold != expected.threshold
    assert smoother.threshold != model.detector.threshold
    path = tmp_path / "smooth.json"
    pipeline.save_model(model, path)
    doc = json.loads(path.read_text())["features"]["smooth"]
    assert doc["kind"] == "ewma" and doc["threshold"] == smoother.threshold
    loaded = pipeline.load_model(path)
    assert isinstance(loaded.features, pipeline.SensorFeatures)
    assert loaded.features.smoother is not None
    assert loaded.features.smoother.threshold == smoother.threshold
    again = pipeline.score_file(loaded, test)
    first = pipeline.score_file(model, test)
    np.testing.assert_array_equal(again.scores, first.scores)
    np.testing.assert_array_equal(again.alarms, first.alarms)
    # the alarms are the smoothed scores against the re-chosen threshold
    np.testing.assert_array_equal(first.alarms, first.scores > smoother.threshold)


def test_synthetic_36_channels_raw_row_model_keeps_its_rate(synthetic: tuple[Path, Path]) -> None:
    """Trained on one synthetic recording, scored on another of the same process, the
    raw-row model (Mahalanobis on standardised rows) alarms near the 0.1 % asked
    (measured 0.2 %). The default windowed features do NOT (measured 74 %; 8 % without the
    cusum family: the leaky CUSUMs of one recording do not transfer; docs/detect.md)."""
    train, test = synthetic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SensorChannelWarning)
        model = pipeline.train([train], packets=False, kind="mahalanobis",
                               sensor=pipeline.SensorOptions(raw_rows=True))
    scored = pipeline.score_file(model, test)
    assert np.mean(scored.alarms) < 0.005, np.mean(scored.alarms)


def test_skab_example_clean_prefix_no_longer_alarms_everywhere(skab: Path) -> None:
    """docs/detect.md's example: train on anomaly-free SKAB, score valve1/1.csv. Before
    issue 13 the clean prefix (rows before the first anomaly) alarmed on 98 % of its
    windows; a scored file now starts a fresh stream and scales have resolution floors.
    Measured with the default families: valve1/1 60 %, valve2/1 28 %: better, and still
    far above the 0.1 % asked on a recording other than the training one (NOT fixed)."""
    model = pipeline.train([skab / "anomaly-free/anomaly-free.csv"], packets=False,
                           kind="mahalanobis-int8")
    for run, ceiling in (("valve1/1.csv", 0.6), ("valve2/1.csv", 0.3)):
        scored = pipeline.score_file(model, skab / run)
        labels = read_sensor_csv(skab / run).labels
        assert labels is not None and scored.rows is not None
        clean = scored.rows < int(np.argmax(labels > 0))
        assert np.mean(scored.alarms[clean]) <= ceiling, (run, np.mean(scored.alarms[clean]))


def test_cli_trains_on_any_csv_names_dropped_channels_and_maps_rows(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from tinyward.cli.main import cli

    train, test = synthetic
    model = tmp_path / "m.json"
    runner = CliRunner()
    result = runner.invoke(cli, ["detect", "train", "--sensors", str(train), "--time-column",
                                 "time", "--features", "stuck,zlevel", "--smooth", "kofn:2/3",
                                 "--kind", "mahalanobis", "--out", str(model)])
    assert result.exit_code == 0, result.output
    assert "warning: channel 'rare' dropped: near-constant" in result.output
    assert "warning: channel 'const' dropped: constant" in result.output
    assert "of 2 features" in result.output
    scores = tmp_path / "s.csv"
    result = runner.invoke(cli, ["detect", "score", str(model), str(test), "--out", str(scores)])
    assert result.exit_code == 0, result.output
    assert scores.read_text().splitlines()[0] == "index,score,alarm,row,line,time"
    for bad, message in ((["--features", "level,magic"], "unknown feature family 'magic'"),
                         (["--smooth", "median:3"], "smoothing 'median:3'"),
                         (["--channels", "s1,nope"], "column 'nope': missing column")):
        result = runner.invoke(cli, ["detect", "train", "--sensors", str(train), *bad,
                                     "--out", str(tmp_path / "x.json")])
        assert result.exit_code != 0 and message in result.output, result.output


@pytest.mark.slow
def test_default_families_are_what_the_stated_rule_chooses(skab: Path) -> None:
    """DEFAULT_FAMILIES is the output of tinyward.detect.sensordev.select_families, which
    reads only the protocol's training streams (odd-numbered runs are never opened)."""
    from tinyward.detect.sensordev import select_families
    from tinyward.detect.sensorfeatures import DEFAULT_FAMILIES

    chosen, aucs = select_families(skab)
    assert chosen == DEFAULT_FAMILIES, chosen
    assert round(float(np.mean(aucs)), 3) == 0.907, aucs


def test_family_rule_ranks_a_set_over_the_alarm_bound_below_every_set_within_it() -> None:
    """AUC bought with false alarms is refused: the AUC-only rule once chose a set with
    6 % dev false alarms (h-tamper)."""
    from tinyward.detect.sensordev import MAX_DEV_ALARMS, _objective

    noisy = ([1.0] * 6, MAX_DEV_ALARMS * 6)
    quiet = ([0.5] * 6, MAX_DEV_ALARMS)
    assert _objective(quiet) > _objective(noisy)
    assert _objective(([0.9] * 6, 0.0)) > _objective(quiet)
