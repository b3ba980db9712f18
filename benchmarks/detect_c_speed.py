"""Benchmark: exported C detectors vs the numpy int8 reference and the float models.

    .venv/bin/python benchmarks/detect_c_speed.py [--repeats 200]

Data: SKAB's anomaly-free run with 16 simple features (8 sensors + first differences),
plus a synthetic 24-feature set, so the figures do not depend on the packet features.
Also prints what int8 quantisation costs in ROC AUC on SKAB (per-run protocol).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tinyward.detect._int8_models import Int8AutoencoderDetector, Int8MahalanobisDetector
from tinyward.detect.bench_c import bench_c, format_bench
from tinyward.detect.cost import KITNET_100_OPS
from tinyward.detect.quant_eval import skab_compare, skab_simple_features

ROOT = Path(__file__).resolve().parents[1]
SKAB = ROOT / ".." / "shared" / "data" / "skab"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    X, _ = skab_simple_features(SKAB / "anomaly-free" / "anomaly-free.csv")
    rng = np.random.default_rng(0)
    X24 = rng.normal(size=(10000, 6)) @ rng.normal(size=(6, 24)) + 0.1 * rng.normal(size=(10000, 24))
    results = []
    for data in (X, X24):
        for detector in (Int8AutoencoderDetector(), Int8MahalanobisDetector()):
            detector.fit(data, target_fpr=0.001, seed=0)
            results.append(bench_c(detector, data, repeats=args.repeats))
    print("Scoring speed, one core (vectors per second; KitNET ops on 100 features = "
          f"{KITNET_100_OPS}):")
    print(format_bench(results))
    print("\nint8 quantisation cost on SKAB (fit on each run's first 400 rows, mean ROC AUC):")
    for model, row in skab_compare(SKAB).items():
        print(f"  {model:<12} float {row['auc_float']:.4f}  int8 {row['auc_int8']:.4f}  "
              f"({int(row['runs'])} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
