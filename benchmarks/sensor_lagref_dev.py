"""Dev-split trial of a lagged-reference level feature for bias and drift (NOT adopted).

    .venv/bin/python benchmarks/sensor_lagref_dev.py [../shared/data/skab]

Runs on the dev split of :mod:`tinyward.detect.sensordev` only (SKAB's training streams,
seeds 100+); it never reads the protocol's test streams or SKAB's test labels. ~1 min.

The feature (h-tamper3, issue 13): per channel, the window's mean against a *lagged*
reference, the ``R`` samples that end ``G`` samples before the window, so that a
120-sample tamper segment never enters its own reference once ``G >= 90``:
``z_c = (mean(window_c) - mean(ref_c)) / max(std(ref_c), q_c)`` (``q_c`` the
quantisation noise of :func:`~tinyward.detect.sensorfeatures.resolution`; ``robust``:
median and 1.4826 MAD instead), centred and scaled per channel by the median and robust
spread of ``z_c`` on the fit windows, then ``|.|``: the largest over channels (``max``)
or one feature per channel (``per-channel``); a line fitted to the reference and
extrapolated (``trend``); each channel scaled by its own benign percentile before the
max (``tail``). Also a two-sided leaky CUSUM of the
per-sample standardised values against the same kind of reference. Each variant is
scored alone and appended to the default families (float Mahalanobis, as the rule
does); the last line runs the rule itself (:func:`~tinyward.detect.sensordev.search_families`)
with the best per-channel variant as an extra family. Figures are in docs/detect.md
("Injected tampering", lagged reference).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tinyward.detect import sensordev
from tinyward.detect.models import make_detector
from tinyward.detect.sensorfeatures import (
    _FAMILY_FEATURES,
    DEFAULT_FAMILIES,
    FAMILIES,
    SKAB_CHANNELS,
    SensorFeatureConfig,
    SensorFeatureExtractor,
    resolution,
)
from tinyward.detect.tamper import TAMPER_KINDS, tamper_stream, window_kind

WINDOW = 30


def collect(skab: Path) -> dict[str, object]:
    """Every family's features on the dev split, with the raw streams and window ends."""
    config = SensorFeatureConfig(families=FAMILIES)
    fit, dev = sensordev.dev_split(skab)
    extractor = SensorFeatureExtractor(SKAB_CHANNELS, config)
    train = extractor.fit(fit)
    fit_ends = []
    for values in fit:
        stream = extractor.copy()
        stream.reset_stream()
        stream.transform(values)
        fit_ends.append(stream.last_window_ends.copy())
    streams: list[np.ndarray] = []
    records: list[tuple[int, int, str]] = []
    rows_out = []
    for number, values in enumerate(dev):
        variants = [(values, None)]
        long = len(values) > 2000
        for round_ in range(sensordev.ROUNDS):
            tampered = tamper_stream(values, seed=100 + number + 100 * round_,
                                     lead=700 if long else 330,
                                     first_kind=round_ if long else number + round_)
            variants.append((tampered.values, tampered))
        for signal, tampered in variants:
            stream = extractor.copy()
            stream.reset_stream()
            rows = stream.transform(signal)
            sid = len(streams)
            streams.append(signal)
            for row, end in zip(rows, stream.last_window_ends, strict=True):
                kind = "benign" if tampered is None else window_kind(
                    tampered, max(0, int(end) - WINDOW), int(end))
                if kind is not None:
                    records.append((sid, int(end), kind))
                    rows_out.append(row)
    quantum = np.array([resolution(np.concatenate([f[:, c] for f in fit]))
                        for c in range(len(SKAB_CHANNELS))]) / np.sqrt(12)
    return {"names": extractor.feature_names, "train": train, "fit": fit,
            "fit_ends": fit_ends, "streams": streams, "records": records,
            "features": np.vstack(rows_out), "q": quantum}


def lagged_z(x: np.ndarray, ends: Sequence[int], reach: int, gap: int, robust: bool,
             q: np.ndarray) -> np.ndarray:
    """Per channel: window mean against the lagged reference, in the reference's spread."""
    out = np.zeros((len(ends), x.shape[1]))
    for i, end in enumerate(ends):
        begin = end - WINDOW
        r1 = max(0, begin - gap)
        r0 = max(0, r1 - reach)
        if r1 - r0 < WINDOW:
            continue  # no reference yet: 0, the benign centre
        ref = x[r0:r1]
        if robust:
            centre = np.median(ref, 0)
            spread = 1.4826 * np.median(np.abs(ref - centre), 0)
        else:
            centre, spread = ref.mean(0), ref.std(0)
        out[i] = (x[begin:end].mean(0) - centre) / np.maximum(spread, q)
    return out


def lagged_trend_z(x: np.ndarray, ends: Sequence[int], reach: int, gap: int,
                   q: np.ndarray) -> np.ndarray:
    """Per channel: window mean against a line fitted to the lagged reference and
    extrapolated to the window's centre, in the line's residual RMS (for the smooth,
    trending channels, whose std is mostly trend)."""
    out = np.zeros((len(ends), x.shape[1]))
    for i, end in enumerate(ends):
        begin = end - WINDOW
        r1 = max(0, begin - gap)
        r0 = max(0, r1 - reach)
        if r1 - r0 < WINDOW:
            continue
        ref = x[r0:r1]
        t = np.arange(r0, r1, dtype=np.float64)
        tc = t - t.mean()
        slope = (tc[:, None] * (ref - ref.mean(0))).sum(0) / (tc**2).sum()
        residual = ref - ref.mean(0) - slope * tc[:, None]
        predicted = ref.mean(0) + slope * ((begin + end - 1) / 2 - t.mean())
        rms = np.sqrt((residual**2).mean(0))
        out[i] = (x[begin:end].mean(0) - predicted) / np.maximum(rms, q)
    return out


def lagged_cusum(x: np.ndarray, reach: int, gap: int, k: float, leak: float,
                 q: np.ndarray) -> np.ndarray:
    """Per sample and channel: two-sided leaky CUSUM of the standardised samples against
    the lagged reference (re-estimated every 10 samples)."""
    up = np.zeros(x.shape[1])
    down = np.zeros(x.shape[1])
    out = np.zeros_like(x)
    centre = spread = None
    for t in range(len(x)):
        if t % 10 == 0 and t - gap - max(0, t - gap - reach) >= WINDOW:
            ref = x[max(0, t - gap - reach): t - gap]
            centre, spread = ref.mean(0), np.maximum(ref.std(0), q)
        if centre is None or spread is None:
            continue
        u = (x[t] - centre) / spread
        up = np.maximum(0.0, leak * up + u - k)
        down = np.maximum(0.0, leak * down - u - k)
        out[t] = np.maximum(up, down)
    return out


def per_window(data: dict, fn) -> tuple[np.ndarray, np.ndarray]:
    """(fit windows, dev windows) of a per-channel statistic ``fn(signal, ends)``."""
    train = np.vstack([fn(f, e) for f, e in zip(data["fit"], data["fit_ends"], strict=True)])
    dev = np.zeros((len(data["records"]), train.shape[1]))
    by_stream: dict[int, list[tuple[int, int]]] = {}
    for i, (sid, end, _) in enumerate(data["records"]):
        by_stream.setdefault(sid, []).append((i, end))
    for sid, items in by_stream.items():
        dev[[i for i, _ in items]] = fn(data["streams"][sid], [e for _, e in items])
    centre = np.median(train, 0)
    spread = np.maximum(1.4826 * np.median(np.abs(train - centre), 0), 1e-9)
    return np.abs((train - centre) / spread), np.abs((dev - centre) / spread)


def scores(train: np.ndarray, dev: np.ndarray, kinds: np.ndarray) -> tuple[list[float], float]:
    detector = make_detector("mahalanobis")
    detector.fit(train)
    score = detector.score(dev)
    benign = score[kinds == "benign"]
    return ([sensordev._roc_auc(benign, score[kinds == k]) for k in TAMPER_KINDS],
            float(np.mean(benign > detector.threshold)))


def show(label: str, result: tuple[list[float], float]) -> None:
    aucs, alarms = result
    print(f"{label:34s}", " ".join(f"{a:.3f}" for a in aucs),
          f"mean {np.mean(aucs):.3f}  dev alarms {100 * alarms:.2f} %", flush=True)


def main(skab: Path) -> None:
    warnings.simplefilter("ignore")  # the small-calibration ThresholdWarning, every fit
    data = collect(skab)
    names = list(data["names"])
    kinds = np.array([k for _, _, k in data["records"]])
    cols = [names.index(n) for f in DEFAULT_FAMILIES for n in _FAMILY_FEATURES[f]]
    base_train, base_dev = data["train"][:, cols], data["features"][:, cols]
    print("AUC per kind:", " ".join(TAMPER_KINDS))
    show("defaults", scores(base_train, base_dev, kinds))
    q = data["q"]
    for shape in ("max", "per-channel"):
        for reach, gap, robust in [(120, 0, False), (300, 0, False), (120, 120, False),
                                   (300, 120, False), (600, 60, False), (120, 180, False),
                                   (60, 180, False), (120, 240, False), (120, 120, True)]:
            def fn(x, ends, reach=reach, gap=gap, robust=robust):
                return lagged_z(x, ends, reach, gap, robust, q)
            train, dev = per_window(data, fn)
            if shape == "max":
                train, dev = train.max(1, keepdims=True), dev.max(1, keepdims=True)
            tag = f"{shape} R={reach} G={gap}{' robust' if robust else ''}"
            if shape == "max":
                benign = dev[kinds == "benign", 0]
                own = [sensordev._roc_auc(benign, dev[kinds == k, 0]) for k in ("bias", "drift")]
                tag += f" (as a score: bias {own[0]:.3f} drift {own[1]:.3f})"
            show(f"{tag} alone", scores(train, dev, kinds))
            show(f"{tag} + defaults", scores(np.column_stack([base_train, train]),
                                              np.column_stack([base_dev, dev]), kinds))
    for reach, gap, k, leak in [(300, 60, 1.0, 0.98), (300, 30, 0.5, 0.95),
                                (120, 120, 1.5, 0.97)]:
        def fc(x, ends, reach=reach, gap=gap, k=k, leak=leak):
            return lagged_cusum(x, reach, gap, k, leak, q)[np.asarray(ends) - 1]
        train, dev = per_window(data, fc)
        train, dev = train.max(1, keepdims=True), dev.max(1, keepdims=True)
        show(f"cusum R={reach} G={gap} k={k} leak={leak} + defaults",
             scores(np.column_stack([base_train, train]), np.column_stack([base_dev, dev]),
                    kinds))
    for reach, gap in [(120, 0), (300, 0), (300, 90), (600, 120)]:
        def fl(x, ends, reach=reach, gap=gap):
            return lagged_trend_z(x, ends, reach, gap, q)
        train, dev = per_window(data, fl)
        show(f"trend per-channel R={reach} G={gap} + defaults",
             scores(np.column_stack([base_train, train]), np.column_stack([base_dev, dev]),
                    kinds))
        show(f"trend max R={reach} G={gap} + defaults",
             scores(np.column_stack([base_train, train.max(1)]),
                    np.column_stack([base_dev, dev.max(1)]), kinds))
    # tail-matched: each channel's |z| over its own benign percentile, then the largest
    raw = {k: kinds == k for k in TAMPER_KINDS}
    for reach, gap in [(120, 120), (60, 180), (120, 0), (300, 0)]:
        def ft(x, ends, reach=reach, gap=gap):
            return lagged_z(x, ends, reach, gap, False, q)
        train, dev = per_window(data, ft)
        for pct in (90.0, 99.0, 99.9):
            scale = np.percentile(train, pct, axis=0)
            t1, d1 = (train / scale).max(1), (dev / scale).max(1)
            benign = d1[kinds == "benign"]
            own = [sensordev._roc_auc(benign, d1[raw[k]]) for k in ("bias", "drift")]
            show(f"tail p{pct} R={reach} G={gap} (as a score: bias {own[0]:.3f} drift "
                 f"{own[1]:.3f}) + defaults",
                 scores(np.column_stack([base_train, t1]), np.column_stack([base_dev, d1]),
                        kinds))
    # oracle: the tampered channel's own z against that channel's benign windows, pooled
    train, dev = per_window(data, lambda x, ends: lagged_z(x, ends, 120, 120, False, q))
    for kind in ("bias", "drift"):
        weighted, count = 0.0, 0
        for c in range(len(SKAB_CHANNELS)):
            hit = [i for i, (sid, end, k) in enumerate(data["records"]) if k == kind and int(
                np.abs(data["streams"][sid] - data["streams"][sid - sid % 7])[
                    end - WINDOW:end].sum(0).argmax()) == c]
            if hit:
                auc = sensordev._roc_auc(dev[kinds == "benign", c], dev[hit, c])
                weighted, count = weighted + auc * len(hit), count + len(hit)
                print(f"  oracle {kind} {SKAB_CHANNELS[c]:22s} n={len(hit):3d} AUC {auc:.3f}")
        print(f"oracle {kind} (own channel, R=120 G=120) pooled AUC {weighted / count:.3f}")
    # the rule itself, with the per-channel R=120 G=120 variant as a family "lagref"
    def fr(x, ends):
        return lagged_z(x, ends, 120, 120, False, q)
    train, dev = per_window(data, fr)
    extra = tuple(f"lagref_{c}" for c in SKAB_CHANNELS)
    families = dict(_FAMILY_FEATURES)
    families["lagref"] = extra
    sensordev._FAMILY_FEATURES = families  # this process only: a trial, not an adoption
    sensordev._SEARCHED = (*sensordev._SEARCHED, "lagref")
    full = np.column_stack([data["features"], dev])
    features = sensordev.DevFeatures(
        (*names, *extra), np.column_stack([data["train"], train]), full[kinds == "benign"],
        {k: full[kinds == k] for k in TAMPER_KINDS})
    chosen, _ = sensordev.search_families(features)
    print("rule with lagref chooses", ", ".join(chosen))
    show("  its dev figures", sensordev.family_scores(features, chosen))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/skab"))
