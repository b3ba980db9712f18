"""Dev-split check of the per-channel lagz alarm, alone, inside the detector and OR-ed.

    .venv/bin/python benchmarks/sensor_chanalarm_dev.py [../shared/data/skab]

Runs on the dev split of :mod:`tinyward.detect.sensordev` only (SKAB's training streams,
seeds 100+); it never reads the protocol's test streams or SKAB's test labels. ~1 min.
Prints the AUC per tamper kind and the share of dev benign windows above the own
threshold of: the default families (float Mahalanobis, as the rule scores them); the
lagz alarm as a score alone; lagz as one more feature inside the detector; and the
detector OR-ed with lagz (:class:`tinyward.detect.sensorfusion.ChannelAlarmFused`), also
for the autoencoder. The settings of lagz (gap 180, reach 60, tail = the channel's
largest benign value) were chosen on this split by the families' rule (highest mean AUC
over the six kinds among settings whose fused dev false alarms stay <= 1 %), from the
grid stated in docs/detect.md (window 30/60/90; reach 60-300 and gap 0-240; tail at the
99th, 99.9th percentile or the maximum of the fit windows);
then the tail's margin (LAGZ_MARGIN) by the smallest of 1, 1.25, 1.5, 2, 2.5, 3, 4
whose false alarms stay <= 1 % with the roles swapped (lagz calibrated on the dev
streams, counted on the fit streams: the last line). Figures in docs/detect.md.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

from tinyward.detect import sensordev
from tinyward.detect.models import make_detector
from tinyward.detect.sensorfeatures import (
    _FAMILY_FEATURES,
    DEFAULT_FAMILIES,
    LAGZ_MARGIN,
    SKAB_CHANNELS,
    SensorFeatureConfig,
    SensorFeatureExtractor,
)
from tinyward.detect.sensorfusion import ChannelAlarmFused
from tinyward.detect.tamper import TAMPER_KINDS


def show(label: str, benign: np.ndarray, attacks: dict[str, np.ndarray],
         threshold: float | None) -> None:
    aucs = [sensordev._roc_auc(benign, attacks[k]) for k in TAMPER_KINDS]
    alarms = "" if threshold is None else f"  dev alarms {100 * np.mean(benign > threshold):.2f} %"
    print(f"{label:34s}", " ".join(f"{a:.3f}" for a in aucs), f"mean {np.mean(aucs):.3f}{alarms}",
          flush=True)


def main(skab: Path) -> None:
    warnings.simplefilter("ignore")  # the small-calibration ThresholdWarning, every fit
    features = sensordev.dev_features(skab)
    names = list(features.names)
    base = [names.index(n) for f in DEFAULT_FAMILIES for n in _FAMILY_FEATURES[f]]
    lagz = names.index("lagz_alarm")
    print("AUC per kind:", " ".join(TAMPER_KINDS))
    for kind in ("mahalanobis", "autoencoder"):
        detector = make_detector(kind)
        detector.fit(features.train[:, base])
        show(f"{kind} (defaults)", detector.score(features.benign[:, base]),
             {k: detector.score(v[:, base]) for k, v in features.attacks.items()},
             detector.threshold)
        inside = make_detector(kind)
        inside.fit(features.train[:, [*base, lagz]])
        show(f"{kind}, lagz as a feature", inside.score(features.benign[:, [*base, lagz]]),
             {k: inside.score(v[:, [*base, lagz]]) for k, v in features.attacks.items()},
             inside.threshold)
        fused = ChannelAlarmFused(make_detector(kind))
        fused.fit(features.train[:, [*base, lagz]])
        show(f"{kind} OR lagz", fused.score(features.benign[:, [*base, lagz]]),
             {k: fused.score(v[:, [*base, lagz]]) for k, v in features.attacks.items()},
             fused.threshold)
    show("lagz alone (alarm > 1)", features.benign[:, lagz],
         {k: v[:, lagz] for k, v in features.attacks.items()}, 1.0)
    print(f"swapped: lagz calibrated on the dev streams, alarms on the fit streams "
          f"{100 * swapped_alarms(skab):.2f} % (LAGZ_MARGIN {LAGZ_MARGIN})")


def swapped_alarms(skab: Path) -> float:
    """The share of the fit streams' windows where lagz alarms (> 1) when it is
    calibrated on the dev streams instead: does its tail carry to other recordings?"""
    fit, dev = sensordev.dev_split(skab)
    extractor = SensorFeatureExtractor(SKAB_CHANNELS, SensorFeatureConfig(families=("lagz",)))
    extractor.fit(dev)
    alarms = []
    for values in fit:
        stream = extractor.copy()
        stream.reset_stream()
        alarms.append(stream.transform(values)[:, 0] > 1.0)
    return float(np.mean(np.concatenate(alarms)))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/skab"))
