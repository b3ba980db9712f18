"""The rule that chose the sensor features' default families, runnable again.

Only SKAB's TRAINING streams of the sensor protocol (:mod:`tinyward.detect.evaluate`) are
used: the first 60 % of ``anomaly-free.csv`` and the anomaly-free prefixes of the
even-numbered runs (in sorted order; prefixes under 450 rows skipped). They are split
again: the first 60 % of the anomaly-free part and every other run prefix fit the
extractor and a float Mahalanobis detector; the rest is the dev set, scored clean
(benign) and with every tamper kind INJECTED by :mod:`tinyward.detect.tamper` (seeds
100+, six rounds with the kinds in turn; a window is attacked by the eval's rule,
:func:`tinyward.detect.tamper.window_kind`). :func:`select_families` then searches
family sets for the highest mean ROC AUC over the six kinds, among sets that put at most
:data:`MAX_DEV_ALARMS` of the dev benign windows above the detector's own threshold (a
set over it ranks below every set within it): two local searches by the best single
move while one raises that objective (dropping first while a drop does, then dropping
or adding one family; ties: the earlier candidate, in
:data:`~tinyward.detect.sensorfeatures.FAMILIES` order), one from every family and one
from the best single family, and the better of the two (a tie: the first). The second
search was added (h-tamper) when, with ``zrough``, the first alone stopped at a dev
local optimum (mean 0.901 against 0.906 for a set five drops away). Alarm families
(``lagz``, h-tamper4) are not searched: they are OR-ed with the detector, not its inputs
(searched as inputs, the rule took lagz and six other changes for dev mean 0.908 against
0.907).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyward.detect.models import make_detector
from tinyward.detect.sensorfeatures import (
    _FAMILY_FEATURES,
    ALARM_FAMILIES,
    FAMILIES,
    SKAB_CHANNELS,
    SensorFeatureConfig,
    SensorFeatureExtractor,
    read_sensor_csv,
)
from tinyward.detect.tamper import TAMPER_KINDS, tamper_stream, window_kind

ROUNDS = 6
#: The largest share of dev benign windows a family set may put above the detector's own
#: threshold. Added (h-tamper) when the AUC-only rule, after the spike-label fix, chose a
#: set with 6 % dev false alarms (the previous defaults: 0.7 %).
MAX_DEV_ALARMS = 0.01
#: The families the rule searches: every one but the alarm channels (``lagz``), which
#: are OR-ed with the detector (:mod:`.sensorfusion`), not fed to it.
_SEARCHED = tuple(f for f in FAMILIES if f not in ALARM_FAMILIES)


def _roc_auc(benign: np.ndarray, attack: np.ndarray) -> float:
    """P(attack score > benign score), ties counted half."""
    greater = (attack[:, None] > benign[None, :]).mean()
    ties = (attack[:, None] == benign[None, :]).mean()
    return float(greater + 0.5 * ties)


def dev_split(skab: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(fit streams, dev streams) from the protocol's training streams only."""
    skab = Path(skab)
    values = read_sensor_csv(skab / "anomaly-free" / "anomaly-free.csv", SKAB_CHANNELS).values
    training = values[: int(len(values) * 0.6)]
    cut = int(len(training) * 0.6)
    fit, dev = [training[:cut]], [training[cut:]]
    runs = sorted(p for p in skab.glob("*/*.csv") if p.parent.name != "anomaly-free")
    prefixes = []
    for i, path in enumerate(runs):
        if i % 2:
            continue  # odd-numbered runs are the protocol's test streams: never read
        table = read_sensor_csv(path, SKAB_CHANNELS)
        labels = table.labels if table.labels is not None else np.zeros(len(table.values))
        first = int(np.argmax(labels > 0)) if (labels > 0).any() else len(labels)
        if first >= 450:
            prefixes.append(table.values[:first])
    fit += prefixes[0::2]
    dev += prefixes[1::2]
    return fit, dev


@dataclass
class DevFeatures:
    names: tuple[str, ...]
    train: np.ndarray
    benign: np.ndarray
    attacks: dict[str, np.ndarray]


def dev_features(skab: Path, config: SensorFeatureConfig | None = None) -> DevFeatures:
    """Features of every family on the dev split (see the module docstring)."""
    config = config or SensorFeatureConfig(families=FAMILIES)
    fit, dev = dev_split(skab)
    extractor = SensorFeatureExtractor(SKAB_CHANNELS, config)
    train = extractor.fit(fit)
    benign = []
    attacks: dict[str, list[np.ndarray]] = {k: [] for k in TAMPER_KINDS}
    w = config.window
    for number, values in enumerate(dev):
        stream = extractor.copy()
        stream.reset_stream()
        benign.append(stream.transform(values))
        long = len(values) > 2000
        for round_ in range(ROUNDS):
            tampered = tamper_stream(values, seed=100 + number + 100 * round_,
                                     lead=700 if long else 330,
                                     first_kind=round_ if long else number + round_)
            stream = extractor.copy()
            stream.reset_stream()
            rows = stream.transform(tampered.values)
            for row, end in zip(rows, stream.last_window_ends, strict=True):
                kind = window_kind(tampered, max(0, int(end) - w), int(end))
                if kind is not None:
                    attacks[kind].append(row)
    return DevFeatures(extractor.feature_names, train, np.vstack(benign),
                       {k: np.vstack(v) for k, v in attacks.items() if v})


def family_aucs(features: DevFeatures, families: list[str] | tuple[str, ...]) -> list[float]:
    """ROC AUC per tamper kind of a float Mahalanobis detector on those families."""
    return family_scores(features, families)[0]


def family_scores(
    features: DevFeatures, families: list[str] | tuple[str, ...]
) -> tuple[list[float], float]:
    """ROC AUC per tamper kind of a float Mahalanobis detector on those families, and the
    share of the dev benign windows above the detector's own threshold (fitted with its
    default target of 0.1 %, calibrated on the later 25 % of the fit windows)."""
    columns = [features.names.index(n) for f in families for n in _FAMILY_FEATURES[f]]
    detector = make_detector("mahalanobis")
    detector.fit(features.train[:, columns])
    benign = detector.score(features.benign[:, columns])
    aucs = [_roc_auc(benign, detector.score(features.attacks[kind][:, columns]))
            for kind in TAMPER_KINDS]
    return aucs, float(np.mean(benign > detector.threshold))


def _objective(scores: tuple[list[float], float]) -> float:
    """Mean AUC; a set whose dev false-alarm share exceeds MAX_DEV_ALARMS ranks below
    every set that keeps it (AUC bought with false alarms is refused)."""
    aucs, alarms = scores
    return float(np.mean(aucs)) - (0.0 if alarms <= MAX_DEV_ALARMS else 1.0)


def select_families(skab: Path) -> tuple[tuple[str, ...], list[float]]:
    """The default families by the rule of the module docstring, and their dev AUCs."""
    return search_families(dev_features(skab))


def search_families(features: DevFeatures) -> tuple[tuple[str, ...], list[float]]:
    """Two local searches, each by best single add-or-drop move while one raises the
    objective (dropping first while a drop does): one from every family (backward), one
    from the best single family (forward); the one with the higher objective (a tie: the
    backward one)."""
    singles = [(family_scores(features, [f]), f) for f in _SEARCHED]
    best_single = max(singles, key=lambda t: _objective(t[0]))
    backward = _local_search(features, list(_SEARCHED), family_scores(features, _SEARCHED))
    forward = _local_search(features, [best_single[1]], best_single[0])
    chosen = forward if _objective(forward[1]) > _objective(backward[1]) else backward
    return tuple(chosen[0]), chosen[1][0]


def _local_search(
    features: DevFeatures, current: list[str], scores: tuple[list[float], float]
) -> tuple[list[str], tuple[list[float], float]]:
    """At most 4 x len(_SEARCHED) moves; each the best single drop while a drop raises
    the objective, else the best single drop or add (ties: the earlier candidate)."""
    for _ in range(4 * len(_SEARCHED)):
        drops = [(family_scores(features, [f for f in current if f != g]), g, -1)
                 for g in current if len(current) > 1]
        moves = drops
        if not drops or _objective(max(drops, key=lambda t: _objective(t[0]))[0]) <= (
                _objective(scores)):
            moves = drops + [
                (family_scores(features, [f for f in _SEARCHED if f in current or f == g]), g, 1)
                for g in _SEARCHED if g not in current
            ]
        if not moves:
            break
        best, family, sign = max(moves, key=lambda t: _objective(t[0]))
        if _objective(best) <= _objective(scores):
            break
        current = ([f for f in current if f != family] if sign < 0
                   else [f for f in _SEARCHED if f in current or f == family])
        scores = best
    return current, scores
