"""The C99 sensor features: bit-exact with their Python reference, from the trained state.

``SensorReference`` (tinyward/detect/sensorfeatures_c.py) is the C's arithmetic in
Python; the C must equal it bit for bit. The reference must in turn equal the numpy
extractor the detectors are trained on, to rounding: numpy sums pairwise, multiplies
matrices with OpenBLAS (fused multiply-adds) and on AVX-512 uses its own log/log1p, so
exact equality with numpy is not on offer. The bound used here, |ref - numpy| <=
1e-11 * |numpy| + 1e-13, is about 40 times the largest difference measured (2.6e-13
relative, in the replay feature; 9 of the 12 SKAB features are exactly equal on most
windows).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs
from tinyward.detect import sensorfeatures
from tinyward.detect.errors import DetectError, DetectMisuse
from tinyward.detect.sensorfeatures import (
    SKAB_CHANNELS,
    SensorFeatureConfig,
    SensorFeatureExtractor,
    read_sensor_csv,
)
from tinyward.detect.sensorfeatures_c import (
    HOST_CFLAGS,
    SELFTEST_EXPECTED,
    SensorExportRefused,
    SensorReference,
    build_sensor_harness,
    export_sensorfeatures_c,
    run_harness,
    sizing_source,
    state_bytes,
)
from tinyward.detect.tamper import tamper_stream

pytestmark = needs(shutil.which("gcc") is not None, "needs gcc")

RTOL, ATOL = 1e-11, 1e-13


def _index(extractor: SensorFeatureExtractor, name: str) -> int:
    return extractor.feature_names.index(name)


def _bytes(extractor: SensorFeatureExtractor) -> int:
    cfg = extractor.config
    return state_bytes(len(extractor.channels), cfg.window, cfg.history,
                       v2=hasattr(extractor, "quantum"))


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def _assert_bit_exact(c: np.ndarray, ref: np.ndarray) -> None:
    assert c.shape == ref.shape
    differ = np.argwhere(_bits(c) != _bits(ref))
    assert not len(differ), f"{len(differ)} values differ, first at {differ[0]}"


def _synthetic(n: int, channels: int, seed: int) -> np.ndarray:
    """Correlated channels around a few slow factors, with on/off status channels and
    a quantised one (the shapes of a real multichannel plant log)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    factors = np.stack([np.sin(t / 300.0), np.cos(t / 170.0), np.sin(t / 47.0 + 1.0)], axis=1)
    mix = rng.normal(size=(3, channels))
    values = factors @ mix + 0.05 * rng.normal(size=(n, channels)) + rng.normal(size=channels) * 5
    values[:, 0] = (factors[:, 0] > 0.3).astype(float)  # on/off status
    values[:, 1] = np.round(values[:, 1] * 10) / 10  # coarse resolution
    return values


# The default families plus lagz (the per-channel alarm the eval ORs with the detector).
_WITH_LAGZ = SensorFeatureConfig(families=(*sensorfeatures.DEFAULT_FAMILIES, "lagz"))


@pytest.fixture(scope="module")
def skab_fitted(skab: Path) -> SensorFeatureExtractor:
    extractor = SensorFeatureExtractor(SKAB_CHANNELS, _WITH_LAGZ)
    extractor.fit(read_sensor_csv(skab / "anomaly-free" / "anomaly-free.csv").values)
    return extractor


@pytest.fixture(scope="module")
def wide_fitted() -> SensorFeatureExtractor:
    extractor = SensorFeatureExtractor([f"s{i}" for i in range(36)], _WITH_LAGZ)
    extractor.fit([_synthetic(1500, 36, 1), _synthetic(1200, 36, 2)])
    return extractor


def test_c_features_equal_reference_on_skab(
    skab: Path, skab_fitted: SensorFeatureExtractor, tmp_path: Path
) -> None:
    # SKAB's valve1 runs, one stream continuing from the trained state, then the
    # anomaly-free run with all six tamper kinds injected (exact replays, frozen values)
    runs = sorted((skab / "valve1").glob("*.csv"))
    values = np.vstack([read_sensor_csv(p).values for p in runs])
    clean = read_sensor_csv(skab / "anomaly-free" / "anomaly-free.csv").values
    values = np.vstack([values, tamper_stream(clean[:4000], seed=3).values])
    exe = build_sensor_harness(skab_fitted, tmp_path)
    c = run_harness(exe, values, skab_fitted.n_features)
    ref = SensorReference(skab_fitted).transform(values)
    python = skab_fitted.copy().transform(values)
    assert len(c) > 1500
    _assert_bit_exact(c, ref)
    np.testing.assert_allclose(ref, python, rtol=RTOL, atol=ATOL)
    print(f"SKAB: {c.size} feature values in {len(c)} windows, C == reference bit for bit; "
          f"{(ref == python).mean():.1%} also equal to numpy's")


def test_c_features_equal_reference_on_36_channels(
    wide_fitted: SensorFeatureExtractor, tmp_path: Path
) -> None:
    stream = tamper_stream(_synthetic(6500, 36, 7), seed=4)
    exe = build_sensor_harness(wide_fitted, tmp_path)
    c = run_harness(exe, stream.values, wide_fitted.n_features)
    ref = SensorReference(wide_fitted).transform(stream.values)
    assert len(c) >= 600
    _assert_bit_exact(c, ref)
    np.testing.assert_allclose(ref, wide_fitted.copy().transform(stream.values),
                               rtol=RTOL, atol=ATOL)
    print(f"36 channels: {c.size} values in {len(c)} windows, C == reference bit for bit")
    # the tampering signals fired, so their code paths ran: an exact replay and a freeze
    replay, stuck = _index(wide_fitted, "replay"), _index(wide_fitted, "stuck")
    assert c[:, replay].max() == pytest.approx(-np.log(1e-3)) and c[:, stuck].max() > 0.9
    # ... and the added noise: zrough above benign's spread of it
    assert c[:, _index(wide_fitted, "zrough_max")].max() > 1.0
    # ... and a bias or drift took some channel past its own benign tail: lagz alarmed
    assert c[:, _index(wide_fitted, "lagz_alarm")].max() > 1.0


def test_c_lagz_alarm_equals_reference_and_reads_the_lagged_rows(
    skab: Path, skab_fitted: SensorFeatureExtractor, tmp_path: Path
) -> None:
    # A bias on one channel from row 700 of the stream continuing training: the alarm
    # exceeds 1 once the bias fills a window whose lagged reference is clean, stays low
    # elsewhere, and the C and the reference agree bit for bit on every window (lagz's
    # zero before a reference exists is in test_sensor_fusion.py and the test below). A
    # reference off by one row would still agree with itself, so the numpy extractor
    # (slicing, not indexing) checks it.
    clean = read_sensor_csv(skab / "anomaly-free" / "anomaly-free.csv").values[:1500]
    values = clean.copy()
    channel = SKAB_CHANNELS.index("Pressure")
    values[700:820, channel] += 8.0 * values[400:700, channel].std()
    exe = build_sensor_harness(skab_fitted, tmp_path)
    c = run_harness(exe, values, skab_fitted.n_features)
    ref = SensorReference(skab_fitted).transform(values)
    python = skab_fitted.copy().transform(values)
    _assert_bit_exact(c, ref)
    np.testing.assert_allclose(ref, python, rtol=RTOL, atol=ATOL)
    lagz = c[:, _index(skab_fitted, "lagz_alarm")]
    ends = skab_fitted.copy()
    ends.transform(values)
    inside = (ends.last_window_ends >= 730) & (ends.last_window_ends <= 820)
    assert lagz[inside].max() > 1.0 and np.median(lagz[~inside]) < 0.5


_CONFIGS = [
    # per-channel features; odd window (even count of differences: median of two);
    # step longer than the window; a short history that the ring wraps many times
    SensorFeatureConfig(window=15, step=20, history=100, min_replay_lag=40,
                        baseline_halflife=3, per_channel=True),
    SensorFeatureConfig(window=8, step=1, history=30, min_replay_lag=8, baseline_halflife=50),
]
_IDS = ["odd-window-wide-step-per-channel", "step-1", "all-families-trend"]
# every family, per channel, and the yardstick's Holt trend
_CONFIGS.append(dataclasses.replace(
    SensorFeatureConfig(window=12, step=4, history=90, min_replay_lag=30, per_channel=True),
    families=tuple(sensorfeatures.FAMILIES), hold_halflife=3, yardstick_halflife=40,
    trend_halflife=5,
))


@pytest.mark.parametrize("config", _CONFIGS, ids=_IDS)
def test_c_features_equal_reference_in_other_configurations(
    config: SensorFeatureConfig, tmp_path: Path
) -> None:
    extractor = SensorFeatureExtractor([f"s{i}" for i in range(5)], config)
    extractor.fit(_synthetic(600, 5, 11))
    values = tamper_stream(_synthetic(3000, 5, 12), length=40, gap=60, lead=200, seed=5).values
    c = run_harness(build_sensor_harness(extractor, tmp_path), values, extractor.n_features)
    ref = SensorReference(extractor).transform(values)
    assert len(c) >= 150
    _assert_bit_exact(c, ref)
    print(f"{config}: {len(c)} windows, C == reference bit for bit")
    np.testing.assert_allclose(ref, extractor.copy().transform(values), rtol=RTOL, atol=ATOL)


def test_c_starts_from_the_trained_state(
    skab: Path, skab_fitted: SensorFeatureExtractor, tmp_path: Path
) -> None:
    values = read_sensor_csv(skab / "valve1" / "0.csv").values[:300]
    exe = build_sensor_harness(skab_fitted, tmp_path)
    c = run_harness(exe, values, skab_fitted.n_features)
    continued = skab_fitted.copy().transform(values)
    _assert_bit_exact(c, SensorReference(skab_fitted).transform(values))
    np.testing.assert_allclose(c, continued, rtol=RTOL, atol=ATOL)
    # the trained state matters: the previous level, the replay history, the baselines
    fresh = skab_fitted.copy()
    fresh.reset_stream()
    restarted = fresh.transform(values)
    n = min(len(c), len(restarted))
    assert not np.allclose(c[:n], restarted[:n])
    replay = _index(skab_fitted, "replay")
    assert c[0, replay] != 0.0 and restarted[0, replay] == 0.0  # needs the trained history


def test_c_follows_a_young_yardstick_from_a_fresh_stream(
    skab: Path, skab_fitted: SensorFeatureExtractor, tmp_path: Path
) -> None:
    """A fresh stream's yardstick is a running average (gain 1/n) until the EWMA's gain
    is larger: the C carries the sample count and switches where Python does."""
    values = read_sensor_csv(skab / "valve1" / "0.csv").values[:900]
    fresh = skab_fitted.copy()
    fresh.reset_stream()
    exe = build_sensor_harness(fresh, tmp_path / "fresh")
    c = run_harness(exe, values, fresh.n_features)
    _assert_bit_exact(c, SensorReference(fresh).transform(values))
    np.testing.assert_allclose(c, fresh.copy().transform(values), rtol=RTOL, atol=ATOL)
    # a stream one window old, exported: the count is carried, and it crosses the
    # switch point (1 / EWMA gain) inside the rows that follow
    young = fresh.copy()
    young.transform(values[:45])
    a_min = 1.0 - 2.0 ** (-1.0 / young.config.yardstick_halflife)
    assert young._yard_n < 1.0 / a_min
    rest = values[45:]
    c = run_harness(build_sensor_harness(young, tmp_path / "young"), rest, young.n_features)
    _assert_bit_exact(c, SensorReference(young).transform(rest))
    after = young.copy()
    np.testing.assert_allclose(c, after.transform(rest), rtol=RTOL, atol=ATOL)
    assert after._yard_n > 1.0 / a_min
    # the carried count matters: the same state with an old count gives other features
    aged = young.copy()
    aged._yard_n = 1e12
    old = run_harness(build_sensor_harness(aged, tmp_path / "aged"), rest, aged.n_features)
    assert not np.array_equal(old, c)


def test_empty_history_switch_changes_only_replay_and_lagz_until_the_ring_refills(
    skab: Path, skab_fitted: SensorFeatureExtractor, tmp_path: Path
) -> None:
    values = read_sensor_csv(skab / "valve1" / "0.csv").values
    n = skab_fitted.n_features
    full = run_harness(build_sensor_harness(skab_fitted, tmp_path / "a"), values, n)
    empty = run_harness(
        build_sensor_harness(skab_fitted, tmp_path / "b",
                             extra_flags=("-DTW_SF_NO_TRAINED_HISTORY",)),
        values, n,
    )
    replay = _index(skab_fitted, "replay")
    lagz = _index(skab_fitted, "lagz_alarm")  # its reference rows are in the ring too
    others = [i for i in range(n) if i not in (replay, lagz)]
    _assert_bit_exact(empty[:, others], full[:, others])
    assert empty[0, replay] == 0.0 and full[0, replay] != 0.0
    assert empty[0, lagz] == 0.0 and full[0, lagz] != 0.0
    late = 1000 // skab_fitted.config.step  # history full of new rows again
    _assert_bit_exact(empty[late:], full[late:])


def test_header_lists_feature_and_channel_names(
    skab_fitted: SensorFeatureExtractor, tmp_path: Path
) -> None:
    exe = build_sensor_harness(skab_fitted, tmp_path)
    out = subprocess.run([str(exe), "names"], capture_output=True, text=True, check=True,
                         timeout=60).stdout.splitlines()
    assert out == [f"channel {n}" for n in SKAB_CHANNELS] + [
        f"feature {n}" for n in skab_fitted.feature_names
    ]
    header = (tmp_path / "tw_sf.h").read_text()
    assert f" *   {_index(skab_fitted, 'replay'):3d} replay" in header
    assert "Volume Flow RateRMS" in header
    assert "malloc(" not in header and "stdio" not in header


def test_hostile_channel_names_cannot_inject_c(tmp_path: Path) -> None:
    # Channel names come from a CSV header: outside input. A name that closes the
    # comment or the string literal must stay a name.
    names = ['x */ int injected = 1; /*', 'q"; int injected2; char *s = "', "back\\slash",
             "tri??/graph", "new\nline", "Δp (bar)"]
    extractor = SensorFeatureExtractor(names)
    extractor.fit(_synthetic(400, len(names), 3))
    exe = build_sensor_harness(extractor, tmp_path)
    out = subprocess.run([str(exe), "names"], capture_output=True, check=True,
                         timeout=60).stdout.decode("utf-8")
    assert out == "".join(f"channel {n}\n" for n in names) + "".join(
        f"feature {f}\n" for f in extractor.feature_names
    )
    header = (tmp_path / "tw_sf.h").read_text()
    # the listing in the opening comment did not end it early
    assert header.index("*/") > header.index(f" {extractor.feature_names[-1]}\n")


def test_channel_names_that_look_like_template_keys_stay_names(tmp_path: Path) -> None:
    # The header is filled by replacing @KEY@ in turn; a CSV column named like a key
    # ("@W@", "@OUTPUTS@") must not be filled in after its own name was pasted.
    names = ["@W@", "@OUTPUTS@", "a@p@b"]
    extractor = SensorFeatureExtractor(names)
    extractor.fit(_synthetic(400, len(names), 3))
    exe = build_sensor_harness(extractor, tmp_path)
    out = subprocess.run([str(exe), "names"], capture_output=True, check=True,
                         timeout=60).stdout.decode("utf-8")
    assert out.splitlines()[: len(names)] == [f"channel {n}" for n in names]


@pytest.mark.parametrize("escaping", [True, False], ids=["escaped", "unsafe-unescaped"])
def test_hostile_channel_name_injects_code_only_without_the_escaping(
    escaping: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The attack: a CSV column named so that, pasted into the header's comment, it closes
    # the comment and defines a symbol of its own in the firmware.
    import tinyward.detect.sensorfeatures_c as module

    if not escaping:
        monkeypatch.setattr(module, "_comment_text", lambda text: text)  # protection off
    names = ["flow", "x */ int tw_injected_by_csv = 1; /*", "temp"]
    extractor = SensorFeatureExtractor(names)
    extractor.fit(_synthetic(400, len(names), 3))
    export_sensorfeatures_c(extractor, tmp_path)
    (tmp_path / "lib.c").write_text(sizing_source("tw_sf"))
    subprocess.run(["gcc", *HOST_CFLAGS, "-c", str(tmp_path / "lib.c"), "-o",
                    str(tmp_path / "lib.o")], check=True, capture_output=True, timeout=120)
    symbols = subprocess.run(["nm", str(tmp_path / "lib.o")], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    assert ("tw_injected_by_csv" in symbols) is (not escaping)


def test_bad_arguments_and_non_finite_rows_are_refused(
    skab_fitted: SensorFeatureExtractor, tmp_path: Path
) -> None:
    exe = build_sensor_harness(skab_fitted, tmp_path)
    out = subprocess.run([str(exe), "selftest"], capture_output=True, text=True, check=True,
                         timeout=60).stdout.splitlines()
    assert out == SELFTEST_EXPECTED


def test_state_bytes_formula_is_the_struct_size(
    skab_fitted: SensorFeatureExtractor, wide_fitted: SensorFeatureExtractor, tmp_path: Path
) -> None:
    for extractor in (skab_fitted, wide_fitted):
        exe = build_sensor_harness(extractor, tmp_path / str(len(extractor.channels)))
        size = int(subprocess.run([str(exe), "sizes"], capture_output=True, text=True,
                                  check=True, timeout=60).stdout)
        assert size == _bytes(extractor)
    assert state_bytes(8, 30, 900) == 60_688 and state_bytes(36, 30, 900) == 273_040


def test_export_refuses_what_it_does_not_implement(
    skab_fitted: SensorFeatureExtractor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SensorExportRefused, match="not fitted"):
        export_sensorfeatures_c(SensorFeatureExtractor(SKAB_CHANNELS), tmp_path)
    # Python keeps the whole stream as history when history=0; the C cannot
    unbounded = SensorFeatureExtractor(["a", "b"], SensorFeatureConfig(history=0))
    unbounded.fit(_synthetic(200, 2, 1))
    with pytest.raises(SensorExportRefused, match="history=0"):
        export_sensorfeatures_c(unbounded, tmp_path)

    # a setting the C does not know (as a new feature switch would be)
    @dataclasses.dataclass(frozen=True)
    class Switched(SensorFeatureConfig):
        smoothing: int = 3

    switched = skab_fitted.copy()
    switched.config = Switched()
    with pytest.raises(SensorExportRefused, match="smoothing=3 is not implemented"):
        export_sensorfeatures_c(switched, tmp_path)
    # a feature family the C does not compute
    extra = skab_fitted.copy()
    extra.feature_names = (*extra.feature_names, "crest_factor")
    with pytest.raises(SensorExportRefused, match="not implemented: crest_factor"):
        export_sensorfeatures_c(extra, tmp_path)
    # stream state the C does not carry
    import tinyward.detect.sensorfeatures_c as module

    real = module.sensor_extractor_to_doc
    monkeypatch.setattr(module, "sensor_extractor_to_doc",
                        lambda e: {**real(e), "smoother": [0.0]})
    with pytest.raises(SensorExportRefused, match="smoother"):
        export_sensorfeatures_c(skab_fitted, tmp_path)
    assert not (tmp_path / "tw_sf.h").exists()
    assert issubclass(SensorExportRefused, DetectError)
    with pytest.raises(DetectMisuse):
        export_sensorfeatures_c(skab_fitted, tmp_path, prefix="bad prefix")


def test_oversized_trained_history_from_a_model_file_is_refused(
    skab_fitted: SensorFeatureExtractor, tmp_path: Path
) -> None:
    # A model file is outside input: a saved history longer than the configured one
    # would be copied past the end of the device's ring by <prefix>_init.
    from tinyward.detect.sensorfeatures import (
        sensor_extractor_from_doc,
        sensor_extractor_to_doc,
    )

    doc = sensor_extractor_to_doc(skab_fitted)
    doc["config"] = {**doc["config"], "history": 100}  # 900 rows saved, ring of 130
    hostile = sensor_extractor_from_doc(doc)
    with pytest.raises(SensorExportRefused, match="900 history rows"):
        export_sensorfeatures_c(hostile, tmp_path)
    doc = sensor_extractor_to_doc(skab_fitted)
    doc["pending"] = doc["history"][:40]  # a full window and more, never emitted
    with pytest.raises(SensorExportRefused, match="40 pending rows"):
        export_sensorfeatures_c(sensor_extractor_from_doc(doc), tmp_path)
    assert not (tmp_path / "tw_sf.h").exists()


def test_compiles_cleanly_as_a_library(skab_fitted: SensorFeatureExtractor, tmp_path: Path) -> None:
    files = export_sensorfeatures_c(skab_fitted, tmp_path)
    (tmp_path / "lib.c").write_text(sizing_source("tw_sf"))
    subprocess.run(["gcc", *HOST_CFLAGS, "-Wshadow", "-Wstrict-prototypes", "-pedantic", "-c",
                    "-I", str(files.header.parent), str(tmp_path / "lib.c"), "-o",
                    str(tmp_path / "lib.o")], check=True, capture_output=True, timeout=120)


@needs(shutil.which("arm-none-eabi-gcc") is not None, "needs gcc-arm-none-eabi")
def test_cortex_m4_sizes_for_8_and_36_channels(
    skab_fitted: SensorFeatureExtractor, wide_fitted: SensorFeatureExtractor, tmp_path: Path
) -> None:
    from tinyward.detect.cortex_m import arm_sizes

    for extractor in (skab_fitted, wide_fitted):
        c = len(extractor.channels)
        for variant, flags in (("trained history", ()),
                               ("empty history", ("-DTW_SF_NO_TRAINED_HISTORY",))):
            work = tmp_path / f"{c}-{len(flags)}"
            export_sensorfeatures_c(extractor, work)
            source = work / "tw_sf_m4.c"
            source.write_text(sizing_source("tw_sf"))
            sizes = arm_sizes(source, work / "m4", flags)  # the .c finds "tw_sf.h" beside it
            assert sizes.data == 0
            assert sizes.bss == _bytes(extractor)
            print(f"Cortex-M4 -Os, {c} channels, {variant}: text {sizes.text} data "
                  f"{sizes.data} bss {sizes.bss}")


SCORE_MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include "tw_sf.h"
#include "det.h"

int main(void)
{
    static tw_sf_state st;
    static char line[1 << 16];
    tw_sf_init(&st);
    while (fgets(line, (int)sizeof line, stdin) != NULL) {
        double x[TW_SF_N_CHANNELS], f[TW_SF_N_FEATURES];
        float ff[TW_SF_N_FEATURES];
        int8_t q[TW_SF_N_FEATURES];
        int32_t score = 0;
        char *p = line, *end;
        for (unsigned i = 0; i < TW_SF_N_CHANNELS; i++) {
            x[i] = strtod(p, &end);
            if (end == p) return 2;
            p = end + (*end == ',');
        }
        if (tw_sf_push(&st, x, f) != TW_SF_READY) continue;
        for (unsigned i = 0; i < TW_SF_N_FEATURES; i++) ff[i] = (float)f[i];
        if (det_quantize(ff, TW_SF_N_FEATURES, q) != DET_OK) return 3;
        if (det_score(q, &score) != DET_OK) return 4;
        printf("%ld\n", (long)score);
    }
    return 0;
}
"""


@pytest.mark.parametrize("kind", ["mahalanobis-int8", "autoencoder-int8"])
def test_c_sensor_path_scores_equal_python(skab: Path, tmp_path: Path, kind: str) -> None:
    # Firmware's whole sensor path in C: window features from the trained state, the
    # float cast, the exported detector's quantisation and int8 score.
    from tinyward.detect.export_c import export_c
    from tinyward.detect.models import make_detector
    from tinyward.detect.sensorfeatures_c import rows_text

    extractor = SensorFeatureExtractor(SKAB_CHANNELS)
    benign = extractor.fit(read_sensor_csv(skab / "anomaly-free" / "anomaly-free.csv").values)
    detector = make_detector(kind)
    detector.fit(benign)
    stream = np.vstack([read_sensor_csv(skab / "valve1" / f"{i}.csv").values for i in range(4)])
    reference = detector.score(SensorReference(extractor).transform(stream)).astype(np.int64)
    numpy_path = detector.score(extractor.copy().transform(stream)).astype(np.int64)

    header = export_sensorfeatures_c(extractor, tmp_path).header
    export_c(detector, tmp_path, prefix="det")
    (tmp_path / "main.c").write_text(SCORE_MAIN)
    exe = tmp_path / "sensor_path"
    subprocess.run(["gcc", *HOST_CFLAGS, "-I", str(header.parent), str(tmp_path / "det.c"),
                    str(tmp_path / "main.c"), "-o", str(exe), "-lm"],
                   check=True, capture_output=True, timeout=120)
    out = subprocess.run([str(exe)], input=rows_text(stream), capture_output=True, text=True,
                         check=True, timeout=120).stdout
    c = np.array([int(v) for v in out.split()], dtype=np.int64)
    assert len(c) == len(reference) > 400
    np.testing.assert_array_equal(c, reference)
    # numpy's features differ from the reference in the last bits: the int8 scores
    # (after quantisation) come out the same on these windows
    np.testing.assert_array_equal(c, numpy_path)
    print(f"{kind}: {len(c)} window scores from the C sensor path equal Python's")
